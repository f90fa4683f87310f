import pytest

from textdistill.errors import UserError
from textdistill.mapping import layer_map, layer_weights


def test_uniform_tinybert_4_from_12():
    assert layer_map("uniform", 4, 12) == [3, 6, 9, 12]


def test_uniform_6_from_12_and_equal_depths():
    assert layer_map("uniform", 6, 12) == [2, 4, 6, 8, 10, 12]
    assert layer_map("uniform", 5, 5) == [1, 2, 3, 4, 5]


def test_uniform_non_dividing():
    g = layer_map("uniform", 4, 6)
    assert g == [2, 3, 5, 6]  # round-half-up of 1.5, 3, 4.5, 6


@pytest.mark.parametrize("m", range(1, 13))
@pytest.mark.parametrize("n", [1, 3, 6, 7, 12, 24])
def test_uniform_properties(m, n):
    if m > n:
        with pytest.raises(UserError, match="deeper|only"):
            layer_map("uniform", m, n)
        return
    g = layer_map("uniform", m, n)
    assert len(g) == m
    assert all(1 <= x <= n for x in g)
    assert all(a < b for a, b in zip(g, g[1:], strict=False))
    assert g[-1] == n
    # each entry is the nearest teacher layer to m*N/M (halves rounded up)
    for i, x in enumerate(g, start=1):
        exact = i * n / m
        assert abs(x - exact) <= 0.5
        if abs(x - exact) == 0.5:
            assert x > exact


def test_top_and_bottom():
    assert layer_map("top", 4, 12) == [9, 10, 11, 12]
    assert layer_map("bottom", 4, 12) == [1, 2, 3, 4]
    with pytest.raises(UserError):
        layer_map("top", 5, 4)


def test_explicit_ok():
    assert layer_map("explicit", 3, 6, [2, 4, 6]) == [2, 4, 6]


def test_explicit_errors():
    with pytest.raises(UserError, match="explicit"):
        layer_map("explicit", 3, 6)
    with pytest.raises(UserError, match="3 entries|student has 4"):
        layer_map("explicit", 4, 6, [1, 2, 3])
    with pytest.raises(UserError, match=r"7.*1\.\.6"):
        layer_map("explicit", 3, 6, [1, 7, 3])
    with pytest.raises(UserError, match=r"0.*1\.\.6"):
        layer_map("explicit", 2, 6, [0, 3])
    with pytest.raises(UserError, match="explicit"):
        layer_map("uniform", 2, 6, [1, 2])


def test_unknown_strategy_lists_valid():
    with pytest.raises(UserError) as info:
        layer_map("middle", 2, 6)
    msg = str(info.value)
    for name in ("uniform", "top", "bottom", "explicit", "middle"):
        assert name in msg


def test_bad_depths():
    with pytest.raises(UserError):
        layer_map("uniform", 0, 6)


def test_layer_weights():
    assert layer_weights(None, 3) == [1.0, 1.0, 1.0]
    assert layer_weights([0.5, 2, 1], 3) == [0.5, 2.0, 1.0]
    with pytest.raises(UserError, match="2 entries"):
        layer_weights([1.0, 1.0], 3)
    with pytest.raises(UserError):
        layer_weights([1.0, -1.0], 2)

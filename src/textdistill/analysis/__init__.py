"""Analysis of (distilled) parallel data: word alignment and corpus measures.

Public API (import from the submodules; this package stays light so that the CLI can
import :mod:`textdistill.analysis.command` without loading numba):

* :mod:`~textdistill.analysis.aligner`: ``encode``, ``EncodedCorpus``,
  ``fit_alignment`` -> ``AlignmentModel`` (``.lexical_table()``, ``.align()``),
  ``LexicalTable``, ``Alignments``, ``read_pharaoh``, ``symmetrize``;
* :mod:`~textdistill.analysis.measures`: ``complexity``, ``faithfulness``,
  ``fuzzy_reordering_scores``, ``reordering_score``, ``LanguageModeEstimator`` (BLEU and
  chrF come from :mod:`textdistill.metrics`);
* :mod:`~textdistill.analysis.analyze`: ``analyze``, ``plot_complexity_faithfulness``;
* :mod:`~textdistill.analysis.command`: ``run_analyze`` (the ``analyze`` stage) and its table;
* :mod:`~textdistill.analysis.data`: ``read_lines``, ``read_l10n``, ``write_l10n_columns``.

See ``docs/analysis.md``.
"""

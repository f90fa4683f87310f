"""Translation teachers and sequence-level knowledge distillation (Kim & Rush 2016).

- :mod:`~textdistill.data.parallel`: parallel data (aligned files, TSV, l10n);
- :mod:`~textdistill.seq2seq.vocab`: a joint subword vocabulary and language checks;
- :mod:`~textdistill.models.seq2seq`: Transformer teachers/students (Marian models),
  saving and loading them, checkpoint averaging;
- :mod:`~textdistill.seq2seq.generate`: resumable, sharded, multi-process corpus decoding
  (beam, greedy, sampling, k-best lists) and Seq-Inter selection;
- :mod:`~textdistill.seq2seq.train`: the ``train`` and ``generate`` stages.

Submodules are imported on demand (``import textdistill.seq2seq`` loads no torch).
"""

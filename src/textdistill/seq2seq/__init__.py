"""Translation teachers and sequence-level knowledge distillation (Kim & Rush 2016).

- :mod:`~textdistill.data.parallel`: parallel data (aligned files, TSV, l10n);
- :mod:`~textdistill.seq2seq.vocab`: a joint subword vocabulary and language checks;
- :mod:`~textdistill.seq2seq.presets`: Transformer teachers/students (Marian models), the
  label-smoothed loss, the inverse square-root schedule, checkpoint averaging;
- :mod:`~textdistill.seq2seq.generate`: resumable, sharded, multi-process corpus decoding
  (beam, greedy, sampling, k-best lists), BLEU/chrF and Seq-Inter selection;
- :mod:`~textdistill.seq2seq.command`: the ``generate`` CLI command.

Submodules are imported on demand (``import textdistill.seq2seq`` loads no torch).
"""

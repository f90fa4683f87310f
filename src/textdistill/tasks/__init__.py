"""Task adapters: what each task's models give the losses (see ``objectives.Task``)."""

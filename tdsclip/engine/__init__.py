"""The engine: everything that runs a model on data, one concern per file.

- ``trainer``: the training loop as named steps (``Trainer``: resume, train_epoch,
  train_step, optimizer_step, log_step, end_epoch, evaluate, save, finish)
- ``setup``: what a run builds before its first step (datasets, model, loaders, optimisation)
- ``evaluation``: per-video scores over every view, reports, ``tdsclip.eval``'s body
- ``prediction``: ``tdsclip.predict``'s body
- ``visualization``: ``tdsclip.visualize``'s body (forward hooks on the SME stem and the
  TD-Adapters); ``pictures``: the PNGs of a run and of an evaluation (``tdsclip.report``)
- ``checkpoint``: plain-dict checkpoints written atomically, model files
- ``context``: the process: rank, device, precision, threads
- ``precision``: ``trainer.precision`` (``auto`` by the hardware) and the autocast context
- ``threads``: intra-op threads that fit the cores beside the data workers
- ``distributed``: one code path for 1 process, torchrun and self-launched workers
- ``optim``: AdamW parameter groups and the warm-up + cosine schedule
- ``metrics``: top-k, confusion matrix, per-split report; ``sinks``: where metrics go
- ``cuda_graphs``: ``trainer.cuda_graph``'s capture; ``memory``: allocator and peak memory
- ``seeding``: seeds and RNG states; ``preemption``: SIGTERM -> checkpoint and exit
- ``launch``: Hydra plumbing for the entry points (also composing a config outside them),
  logging of workers, code revision

``tdsclip.engine`` may import ``tdsclip.models``, ``tdsclip.data`` and ``tdsclip.report``; none
of them imports the engine.
"""

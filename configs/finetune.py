"""Fine-tune a pretrained bigmodel run as a text classifier (`python -m bigmodel finetune`).

  python -m bigmodel finetune --from runs/l2 --task kjv_books --workdir runs/l2-books
  python -m bigmodel finetune --from runs/l2 --task kjv_books --workdir runs/l2-books-scratch --scratch
  python -m bigmodel finetune --from runs/l2 --task tfds:imdb_reviews --workdir runs/l2-imdb \
      --config.task.data_dir=~/tensorflow_datasets --config.task.seq_len=256

--from names a `bigmodel train` run: its architecture, tokenizer and (unless --scratch) newest
checkpoint become the backbone; the run is only read. --task and --from fill task.name and
backbone.init_from, --scratch sets backbone.init=scratch (the same architecture and budget from a
random init: the baseline). Any key below can be overridden with --config.group.key=value.
With the defaults, the main job's largest run (886K non-embedding parameters) fine-tunes on
kjv_books in about 6 CPU-minutes (300 steps of 32 verses, 6 validations; docs/finetuning.md).
"""

import ml_collections


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    del arg  # one configuration; every key is overridable
    config = ml_collections.ConfigDict()
    config.seed = 0  # init of the head (and of a scratch backbone), batch order, dropout

    config.task = ml_collections.ConfigDict()
    config.task.name = ""  # set by --task: kjv_books | tfds:<name>[/<config>]
    config.task.seq_len = 128  # tokens per example: longer texts are cut, shorter ones padded (≤ the model's max_seq_len)
    config.task.verses = 1  # kjv_books: consecutive verses per example
    config.task.max_train_examples = 0  # 0: every train example; N: a seeded subset of N (a low-data regime)
    config.task.text_feature = "text"  # tfds: the text feature
    config.task.label_feature = "label"  # tfds: the ClassLabel feature
    config.task.data_dir = ""  # tfds data dir; "" → the --from run's data dir ($TFDS_DATA_DIR, ~/.cache/bigmodel/tfds)

    config.backbone = ml_collections.ConfigDict()
    config.backbone.init_from = ""  # set by --from: the train run's workdir
    config.backbone.init = "pretrained"  # pretrained | scratch (set by --scratch)
    config.backbone.step = 0  # the --from run's checkpoint to start from; 0: its newest (config.json records which)
    config.backbone.freeze = False  # True: train the head only; the backbone stays bit-identical

    config.classifier = ml_collections.ConfigDict()
    config.classifier.pooling = "last"  # last (the last real token's hidden state) | mean (over real tokens)
    config.classifier.dropout = 0.1  # on the pooled features (the backbone keeps its own model.dropout)

    config.train = ml_collections.ConfigDict()
    config.train.steps = 300
    config.train.batch_size = 32  # examples per step
    config.train.log_every = 10

    # The trainer's AdamW (bigmodel/optim.py), with fine-tuning's usual gentler settings.
    config.optim = ml_collections.ConfigDict()
    config.optim.name = "adamw"
    config.optim.lr = 1e-3
    config.optim.warmup_steps = 30
    config.optim.schedule = "cosine"  # constant | cosine | wsd
    config.optim.min_lr_ratio = 0.1
    config.optim.decay_fraction = 0.2  # wsd only
    config.optim.decay_shape = "linear"  # wsd only: linear | 1-sqrt
    config.optim.weight_decay = 0.01
    config.optim.decay_embeddings = False
    config.optim.b1 = 0.9
    config.optim.b2 = 0.999
    config.optim.grad_clip = 1.0  # global norm of the trained parameters; 0 disables

    config.eval = ml_collections.ConfigDict()
    config.eval.every_steps = 50  # validation cadence (and always at the last step)
    config.eval.batch_size = 128  # examples per forward pass on validation and test
    config.eval.max_examples = 1024  # validation examples per evaluation (a seeded subset); 0: all. Test always uses all.
    config.eval.metric = "macro_f1"  # selects the best checkpoint: accuracy | macro_f1 | loss
    config.eval.patience = 0  # stop after this many evaluations without a better metric; 0: never stop early

    config.checkpoint = ml_collections.ConfigDict()
    config.checkpoint.every_steps = 100  # and at the last step, an early stop and a signal
    config.checkpoint.keep = 2
    return config

"""umm_ray.train: Ray Train (`TorchTrainer`, CPU or GPU workers, DDP or DeepSpeed ZeRO) training stages.

- `loop`: the shared runner `fit(task, examples, spec) -> TrainResult` (sharding, checkpoint every K, resume).
- `sft`: `run_sft(cfg, layout)` fine-tunes the policy; measures the gold gain of SFT over the base model.
- `reward`: `train_rm(cfg, layout, kind)` with kind dense | moe | umm | ensemble (`train_dense`, `train_moe`,
  `train_umm`, `train_ensemble`), each writing the model and an `eval.json` of held-out accuracy / BT loss.
- `bt_stage`: one BT stage and what every kind shares (`RMData`, `run_bt_stage`, `TrainedRM`).
- `bt_task`: the Bradley–Terry task; `ensemble`: concurrent seed members; `evaluate`: held-out metrics; `plots`.
"""

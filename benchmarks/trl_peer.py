"""Peer benchmark: dense reward-model training throughput of umm_ray (Ray Train, `umm_ray.train.loop.fit` with the
dense `BTTask`) against TRL's `RewardTrainer`, on the same pairs, in one run; reported as pairs/s, real tokens/s and
the ratio umm_ray / TRL per precision.

TRL is a peer, never a project dependency: install it into its own directory (its other requirements are already in
the project's .venv) and point --trl-path at it; TRL runs in a subprocess with PYTHONPATH=<that dir>:

    /work/main/.venv/bin/pip install --no-deps --target /work/peer/trl trl==1.16.0
    PYTHONPATH=$PWD python benchmarks/trl_peer.py --model smollm2-135m --trl-path /work/peer/trl

Fairness: TRL silently drops pairs longer than its max_length, so only pairs whose chosen and rejected rows both fit
in --max-len (as umm_ray encodes them: chat-template prompt + response + EOS, `encode_prompt_response`) are used,
and TRL is fed exactly those token ids (pre-tokenized `chosen_ids`/`rejected_ids`), in umm_ray's batch order
(sequential sampler), so every optimizer step of both systems sees the same pairs. Same global batch, lr (constant),
grad clip 1.0, AdamW, no weight decay, steps, precision. Thread budget: --threads in all (TRL: one process with
torch.set_num_threads); umm_ray runs each layout of --umm, `WxT[:B]` = W Ray Train workers of T torch threads each
(`resources.train_cpus T`), with token-budget micro-batches of B padded tokens when given (`rm.micro_batch_tokens`),
and with a pair's prompt encoded once (one row per pair, `rm.share_prompt`) when the layout ends in `:shared`.
Every layout trains the same pairs per optimizer step (one permutation, dealt to ranks as the loop deals it).

Per-step breakdown of umm_ray (rank-averaged): collate, forward (loss), backward (with DDP's overlapped gradient
all-reduce), and the rest of the step (all-reduce wait, clip, AdamW, metric all-reduce), from timers in a `BTTask`
subclass that report through the loop's own metric dict; checkpointing happens only after the last step here
(checkpoint_every > steps), outside the measured steps.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from umm_ray.data.microbatch import padded_cost, token_budget_groups  # noqa: E402
from umm_ray.data.preferences import load_preferences  # noqa: E402
from umm_ray.data.shared_prefix import shared_prefix_len  # noqa: E402
from umm_ray.data.tokenize import encode_prompt_response  # noqa: E402
from umm_ray.pretrained import resolve_model  # noqa: E402
from umm_ray.records import PreferencePair  # noqa: E402
from umm_ray.resources import RoleResources  # noqa: E402
from umm_ray.train.bt_task import BTTask  # noqa: E402
from umm_ray.train.loop import TrainSpec, fit, rank_batches  # noqa: E402

PIP_CMD = "/work/main/.venv/bin/pip install --no-deps --target {path} trl==1.16.0"
NO_LIMIT = 1 << 30  # encode without truncation, so a pair's full length decides whether it fits


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m", help="HF causal LM dir (score head is new)")
    ap.add_argument("--data", default="", help="HH-style jsonl(.gz) of chosen/rejected transcripts "
                                               "(default: the harmless-base test split under shared/data)")
    ap.add_argument("--trl-path", default="/work/peer/trl", help="directory TRL was pip-installed into (--target)")
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--global-batch", type=int, default=16, help="pairs per optimizer step (both systems)")
    ap.add_argument("--threads", type=int, default=2, help="TRL's torch threads; each umm_ray layout's W x T")
    ap.add_argument("--umm", default="2x1,1x2,1x2:1024,1x2:1024:shared",
                    help="umm_ray layouts, comma-separated WxT[:B][:shared]: W workers x T threads, "
                         "B = rm.micro_batch_tokens, shared = rm.share_prompt (one row per pair, prompt once)")
    ap.add_argument("--warmup", type=int, default=2, help="steps not timed")
    ap.add_argument("--steps", type=int, default=8, help="timed optimizer steps")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--chat-template", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/bench/trl_peer")
    ap.add_argument("--trl-child", default="", help=argparse.SUPPRESS)  # internal: run TRL on this job file
    args = ap.parse_args(argv)
    args.model = resolve_model(args.model)  # a catalog name -> its cached HF directory
    return args


# ---------------------------------------------------------------------------------------------------------------------
# Pair selection and token accounting (pure; tested in tests/test_trl_peer.py).


def encode_pair(tok, pair: PreferencePair, chat_template: str = "auto") -> tuple[list[int], list[int]]:
    """The chosen and rejected token ids exactly as umm_ray's BT collate builds them, untruncated."""
    c = encode_prompt_response(tok, pair.prompt, pair.chosen, NO_LIMIT, chat_template=chat_template)[0]
    r = encode_prompt_response(tok, pair.prompt, pair.rejected, NO_LIMIT, chat_template=chat_template)[0]
    return c, r


def select_fitting(encoded: list[tuple[list[int], list[int]]], max_len: int, n: int) -> list[int]:
    """Indices of the first `n` pairs whose chosen and rejected both have <= max_len tokens (TRL's filter, so
    neither system truncates or drops anything). Raises if fewer than n fit."""
    keep = [i for i, (c, r) in enumerate(encoded) if len(c) <= max_len and len(r) <= max_len]
    if len(keep) < n:
        raise ValueError(f"only {len(keep)} of {len(encoded)} pairs fit max_len={max_len}; need {n} "
                         f"(fewer --steps/--batch, or a larger --max-len)")
    return keep[:n]


def parse_layouts(text: str, threads: int, global_batch: int) -> list[tuple[int, int, int, bool]]:
    """`--umm` as [(workers, threads per worker, micro_batch_tokens, share_prompt)]; each must use exactly `threads`
    threads and split `global_batch` evenly over its workers (ValueError naming the layout otherwise)."""
    out = []
    for item in [t.strip() for t in text.split(",") if t.strip()]:
        try:
            wt, *rest = item.split(":")
            shared = rest[-1:] == ["shared"]
            rest = rest[:-1] if shared else rest
            if len(rest) > 1:
                raise ValueError
            w, t = (int(x) for x in wt.lower().split("x"))
            layout = (w, t, int(rest[0]) if rest else 0, shared)
        except ValueError:
            raise ValueError(f"--umm {item!r}: expected WxT[:B][:shared] (e.g. 2x1, 1x2:1024, 1x2:1024:shared)") \
                from None
        if w < 1 or t < 1 or w * t != threads or global_batch % w or layout[2] < 0:
            raise ValueError(f"--umm {item!r}: W x T must equal --threads {threads}, W divide --global-batch "
                             f"{global_batch}, B be >= 0")
        out.append(layout)
    if not out:
        raise ValueError("--umm: no layout given")
    return out


def layout_name(workers: int, threads: int, micro_tokens: int, shared: bool = False) -> str:
    name = f"umm_ray {workers}x{threads}" + (f" mb{micro_tokens}" if micro_tokens else "")
    return name + (" shared" if shared else "")


def packed_lengths(encoded: list[tuple[list[int], list[int]]]) -> list[int]:
    """Each pair's row length with its shared prompt once (`rm.share_prompt`): chosen + rejected - shared prefix."""
    return [len(c) + len(r) - shared_prefix_len(c, r) for c, r in encoded]


def global_order(n: int, workers: int, batch: int, seed: int) -> list[list[int]]:
    """Per optimizer step, the pair indices all umm_ray ranks train on together (epoch 0, rank 0's batch first);
    TRL, sampling sequentially with batch*workers, sees the same pairs per step when fed them in this order."""
    per_rank = [rank_batches(n, 0, r, workers, batch, seed) for r in range(workers)]
    return [sum((per_rank[r][i] for r in range(workers)), []) for i in range(len(per_rank[0]))]


def step_tokens(lengths: list[tuple[int, int]], steps: list[list[int]], rows_per_pad: int,
                micro_tokens: int = 0, packed: list[int] | None = None) -> list[dict]:
    """Per step: real (non-pad) tokens of both rows of every pair (the work, however it is laid out), and the
    tokens the model runs on: each group of `rows_per_pad` consecutive pairs padded to its own longest row
    (umm_ray: one worker's batch; TRL: the whole global batch), or, with `micro_tokens` > 0, each group cut into the
    loop's token-budget pieces; with `packed` (`packed_lengths`), one row per pair of that length."""
    out = []
    rows = 1 if packed is not None else 2
    for idx in steps:
        real = sum(lengths[i][0] + lengths[i][1] for i in idx)
        padded = 0
        for g in range(0, len(idx), rows_per_pad):
            longest = [packed[i] if packed is not None else max(lengths[i]) for i in idx[g:g + rows_per_pad]]
            pieces = token_budget_groups(longest, micro_tokens, rows) if micro_tokens else [range(len(longest))]
            padded += sum(padded_cost(longest, piece, rows) for piece in pieces)
        out.append({"pairs": len(idx), "real": real, "padded": padded})
    return out


def rate_row(system: str, precision: str, step_times: list[float], toks: list[dict]) -> dict:
    """Throughput over the timed steps: `step_times` [steps] seconds, `toks` the same steps' token counts."""
    secs = sum(step_times)
    pairs, real = sum(t["pairs"] for t in toks), sum(t["real"] for t in toks)
    return {"system": system, "precision": precision, "steps": len(step_times), "pairs": pairs, "tokens": real,
            "padded_tokens": sum(t["padded"] for t in toks), "s_per_step": secs / len(step_times),
            "pairs_per_s": pairs / secs, "tokens_per_s": real / secs}


# ---------------------------------------------------------------------------------------------------------------------
# umm_ray side: the product's Ray Train path, with timers reported through the loop's metric dict.


class TimedBTTask(BTTask):
    """The dense BTTask plus per-step timers (collate, forward, backward) reported as extra metrics; the loop
    averages them over ranks into its history. Backward is timed from the loss's gradient hook to the end of the
    autograd pass, and reported one step late (the next loss() call)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._t = {"collate": 0.0, "backward": 0.0}

    def collate(self, pairs):
        t0 = time.perf_counter()
        out = super().collate(pairs)
        self._t["collate"] = time.perf_counter() - t0
        return out

    def loss(self, model, raw, batch):
        t0 = time.perf_counter()
        loss, extra = super().loss(model, raw, batch)
        fwd = time.perf_counter() - t0
        prev_bwd = self._t["backward"]

        def on_grad(g):  # backward begins: time it until the autograd engine finishes this pass
            start = time.perf_counter()
            torch.autograd.Variable._execution_engine.queue_callback(
                lambda: self._t.__setitem__("backward", time.perf_counter() - start))
            return g
        loss.register_hook(on_grad)
        return loss, {**extra, "t_collate": self._t["collate"], "t_forward": fwd, "t_backward_prev": prev_bwd}


def run_umm(args, pairs: list[PreferencePair], precision: str, layout: tuple[int, int, int, bool],
            work: Path) -> tuple[list[float], dict]:
    """fit() for warmup+steps steps with `layout` (workers, threads each, micro_batch_tokens, share_prompt); returns
    the timed steps' durations [steps] and the mean breakdown (s/step)."""
    import ray  # heavy: only the umm_ray side needs a cluster

    workers, threads, micro, shared = layout
    task = TimedBTTask("dense", args.model, args.max_len, chat_template=args.chat_template, share_prompt=shared)
    n = args.warmup + args.steps
    name = f"bench_{precision}_{workers}x{threads}_mb{micro}" + ("_shared" if shared else "")
    spec = TrainSpec(name=name, stage_dir=work / name, num_workers=workers, batch_size=args.global_batch // workers,
                     lr=args.lr, seed=args.seed, max_steps=n, checkpoint_every=n + 1, precision=precision,
                     worker=RoleResources("train", float(threads), 0.0), micro_batch_tokens=micro)
    if not ray.is_initialized():
        ray.init(num_cpus=args.threads, include_dashboard=False, log_to_driver=False)
    res = fit(task, pairs, spec)
    h = res.history
    times = [res.started_at] + [r["time"] for r in h]
    dts = [times[i + 1] - times[i] for i in range(len(h))][args.warmup:]
    timed = h[args.warmup:]
    bwd = [r["t_backward_prev"] for r in h[args.warmup + 1:]]  # step i's backward shows in step i+1
    br = {"collate": _mean(r["t_collate"] for r in timed), "forward": _mean(r["t_forward"] for r in timed),
          "backward+overlapped_allreduce": _mean(bwd)}
    if micro:  # the pieces' forwards and backwards interleave: the loss hook times only the last piece's
        br = {"collate": br["collate"], "pieces' forward+backward, allreduce, clip, AdamW": _mean(dts) - br["collate"]}
    else:
        br["rest (allreduce wait, clip, AdamW, metrics)"] = _mean(dts) - sum(br.values())
    br["step"] = _mean(dts)
    return dts, br


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else float("nan")


# ---------------------------------------------------------------------------------------------------------------------
# TRL side: a subprocess with the peer on its path.


def check_trl(trl_path: str) -> None:
    """Fail clearly when TRL is not importable from `trl_path`."""
    env = {**os.environ, "PYTHONPATH": f"{trl_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    p = subprocess.run([sys.executable, "-c", "import trl, trl.trainer.reward_trainer; print(trl.__version__)"],
                       env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"--trl-path {trl_path}: TRL is not importable there ({p.stderr.strip().splitlines()[-1:]})."
                         f" Install it as a peer with:\n  {PIP_CMD.format(path=trl_path)}")
    print(f"TRL {p.stdout.strip()} from {trl_path}")


def run_trl(args, job: dict, work: Path) -> list[float]:
    """Run TRL in a subprocess on `job` (token ids in umm_ray's step order); returns per-step durations."""
    jf = work / f"trl_job_{job['precision']}.json"
    jf.write_text(json.dumps(job))
    env = {**os.environ, "PYTHONPATH": f"{args.trl_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": str(args.threads)}
    p = subprocess.run([sys.executable, __file__, "--trl-child", str(jf)], env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"TRL child failed:\n{p.stderr[-3000:]}")
    return json.loads((work / f"trl_times_{job['precision']}.json").read_text())


def trl_child(job_file: str) -> None:
    """Inside the TRL subprocess: RewardTrainer over the job's pre-tokenized pairs; writes step end times."""
    from datasets import Dataset  # the child alone imports the peer stack
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback  # child
    from trl import RewardConfig, RewardTrainer  # the peer: importable only with --trl-path on PYTHONPATH

    job = json.loads(Path(job_file).read_text())
    torch.set_num_threads(job["threads"])
    tok = AutoTokenizer.from_pretrained(job["model"])
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    config = AutoConfig.from_pretrained(job["model"], num_labels=1)
    config.pad_token_id = config.pad_token_id if config.pad_token_id is not None else config.eos_token_id
    torch.manual_seed(job["seed"])
    model = AutoModelForSequenceClassification.from_pretrained(job["model"], config=config, dtype=torch.float32)
    ds = Dataset.from_dict({"chosen_ids": job["chosen"], "rejected_ids": job["rejected"]})
    marks = []

    class Marks(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            if not marks:
                marks.append(time.time())

        def on_step_end(self, a, state, control, **kw):
            marks.append(time.time())

    cfg = RewardConfig(output_dir=str(Path(job_file).parent / "trl_out"), per_device_train_batch_size=job["batch"],
                       gradient_accumulation_steps=1, max_steps=job["n_steps"], learning_rate=job["lr"],
                       lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
                       bf16=job["precision"] == "bf16", use_cpu=True, save_strategy="no", report_to=[],
                       logging_steps=1, max_length=job["max_len"], train_sampling_strategy="sequential",
                       dataloader_num_workers=0, seed=job["seed"], disable_dropout=True)
    trainer = RewardTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok, callbacks=[Marks()])
    kept = len(trainer.train_dataset)
    if kept != len(ds):
        raise RuntimeError(f"TRL kept {kept} of {len(ds)} pairs: the selection does not match its max_length")
    trainer.train()
    dts = [marks[i + 1] - marks[i] for i in range(len(marks) - 1)]
    Path(job_file).with_name(f"trl_times_{job['precision']}.json").write_text(json.dumps(dts))


# ---------------------------------------------------------------------------------------------------------------------


def default_data() -> Path:
    for root in (Path("/work/shared/data"), Path(__file__).resolve().parents[2] / "shared" / "data"):
        for name in ("test.jsonl.gz", "train.jsonl.gz"):
            f = root / "hh-rlhf" / "harmless-base" / name
            if f.is_file():
                return f
    raise SystemExit("no HH harmless-base jsonl.gz found; pass --data")


def table(rows: list[dict]) -> str:
    head = "| system | precision | pairs | real tokens | padded tokens | s/step | pairs/s | tokens/s | umm_ray/TRL |"
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        ratio = f"{r['ratio']:.2f}x" if "ratio" in r else ""
        lines.append(f"| {r['system']} | {r['precision']} | {r['pairs']} | {r['tokens']} | {r['padded_tokens']} | "
                     f"{r['s_per_step']:.2f} | {r['pairs_per_s']:.2f} | {r['tokens_per_s']:.0f} | {ratio} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.trl_child:
        return trl_child(args.trl_child)
    check_trl(args.trl_path)
    from transformers import AutoTokenizer  # heavy: ~3 s, after the TRL check so a missing peer fails fast

    data = Path(args.data) if args.data else default_data()
    raw = load_preferences(str(data), on_error="skip")
    tok = AutoTokenizer.from_pretrained(args.model)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    n_steps, gb = args.warmup + args.steps, args.global_batch
    layouts = parse_layouts(args.umm, args.threads, gb)
    encoded = [encode_pair(tok, p, args.chat_template) for p in raw]
    keep = select_fitting(encoded, args.max_len, n_steps * gb)
    pairs, enc = [raw[i] for i in keep], [encoded[i] for i in keep]
    lengths, packed = [(len(c), len(r)) for c, r in enc], packed_lengths(enc)
    order = global_order(len(pairs), 1, gb, args.seed)[:n_steps]  # the same pair set per step for any W
    fit_frac = sum(len(c) <= args.max_len and len(r) <= args.max_len for c, r in encoded) / len(encoded)
    print(f"{data}: {len(raw)} pairs, {fit_frac:.0%} fit max_len={args.max_len}; using {len(pairs)}")
    timed = order[args.warmup:]
    trl_tok = step_tokens(lengths, timed, gb)
    flat = [i for idx in order for i in idx]
    out, rows, breakdown = Path(args.out), [], {}
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="trl_peer_") as tmp:
        work = Path(tmp)
        for prec in [p for p in args.precisions.split(",") if p]:
            job = {"model": args.model, "precision": prec, "threads": args.threads, "batch": gb, "lr": args.lr,
                   "n_steps": n_steps, "max_len": args.max_len, "seed": args.seed,
                   "chosen": [enc[i][0] for i in flat], "rejected": [enc[i][1] for i in flat]}
            t0 = time.time()
            trl_dts = run_trl(args, job, work)[args.warmup:]
            print(f"TRL {prec}: {time.time() - t0:.0f} s wall")
            t = rate_row("TRL", prec, trl_dts, trl_tok)
            for w, th, mb, shared in layouts:
                system, t0 = layout_name(w, th, mb, shared), time.time()
                umm_dts, breakdown[f"{system} {prec}"] = run_umm(args, pairs, prec, (w, th, mb, shared), work)
                print(f"{system} {prec}: {time.time() - t0:.0f} s wall; breakdown {breakdown[f'{system} {prec}']}")
                # each rank pads its own batch: W-rank order (same pairs per step), padded per gb // W pairs
                ranked = global_order(len(pairs), w, gb // w, args.seed)[args.warmup:n_steps]
                u = rate_row(system, prec, umm_dts,
                             step_tokens(lengths, ranked, gb // w, mb, packed if shared else None))
                u["ratio"] = u["pairs_per_s"] / t["pairs_per_s"]
                rows.append(u)
            rows.append(t)
    md = table(rows)
    setup = (f"model {args.model}, data {data.name}, max_len {args.max_len}, {gb} pairs/step "
             f"(umm_ray layouts {args.umm} as workers x threads[:micro_batch_tokens]; TRL 1 process x {args.threads} "
             f"threads), "
             f"{args.warmup} warm-up + {args.steps} timed steps, lr {args.lr}")
    bd = "\n".join(f"- {p} s/step: " + ", ".join(f"{k} {v:.2f}" for k, v in b.items())
                   for p, b in breakdown.items())
    text = f"{setup}\n\n{md}\n\n{bd}\n"
    print(text)
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"setup": setup, "rows": rows, "breakdown": breakdown}, indent=1))


if __name__ == "__main__":
    main()

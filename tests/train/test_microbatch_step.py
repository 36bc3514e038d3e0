"""Token-budget micro-batches give the full batch's optimizer step (fp32, in process, no Ray): BT loss (pairs kept
together), SFT loss (mean over response tokens) and the PPO joint loss (token means over the response masks), each
through the task / loss code the training runs use (`accumulate_step`, `BTTask.micro_batches`,
`SFTTask.micro_batches`, `token_budget_pieces` + `joint_loss`). SGD, not AdamW, compares the steps: AdamW's first
step is ~lr x sign(gradient) and would hide a wrongly weighted gradient."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch

from tests.models.conftest import make_rm, make_tokenizer, tiny_config
from umm_ray.algo.ppo import joint_loss
from umm_ray.data.tokenize import encode_texts
from umm_ray.ppo.experience import Experience, make_policy_batch, token_budget_pieces
from umm_ray.ppo.modeling import ActorCritic, gather_logprobs
from umm_ray.train.bt_task import BTTask, RewardNet
from umm_ray.train.levers import accumulate_step
from umm_ray.train.sft import IGNORE, SFTTask

LR = 0.5


class SGDEngine:
    """The engine verbs accumulate_step uses (umm_ray.train.loop's DDP engine without DDP), over plain SGD."""

    def __init__(self, model):
        self.model = model
        self.opt = torch.optim.SGD(model.parameters(), lr=LR)

    def accumulating(self, last: bool):
        return contextlib.nullcontext()

    def backward(self, loss):
        loss.backward()

    def update(self):
        self.grads = {n: p.grad.clone() for n, p in self.model.named_parameters() if p.grad is not None}
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


def _full_step(task, model, batch):
    engine = SGDEngine(model)
    loss, extra = task.loss(model, model, batch)
    loss.backward()
    engine.update()
    return loss.item(), extra, engine.grads


def _close(x: torch.Tensor, y: torch.Tensor, rel: float = 1e-5) -> bool:
    """Equal up to fp32 rounding of sums taken in another order: relative to the tensor's norm, not elementwise."""
    x, y = x.detach(), y.detach()  # parameters are compared too; float() of a grad-tracking tensor warns
    return float(torch.linalg.vector_norm(x - y)) <= rel * float(torch.linalg.vector_norm(x)) + 1e-7


def _assert_same_step(full, pieces, a, b):
    assert pieces.keys() == full.keys()
    for n in full:
        assert _close(full[n], pieces[n]), n
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert _close(p, q), n


def test_bt_token_budget_step_equals_full_batch_step():
    tok = make_tokenizer()
    prompts = ["the cat sat on", "question one two", "list red blue", "sort five four three", "sum"]
    chosen = [" the mat", " yes good answer", " green", " three four five six seven eight nine ten", " ten"]
    rejected = [" bad", " no", " red red red blue green", " one", " two two"]
    ids, mask = encode_texts(tok, prompts * 2, chosen + rejected, max_len=32)
    batch = {"ids": ids, "mask": mask}
    task = BTTask("dense", "unused", max_len=32)
    pieces = task.micro_batches(batch, budget=40)
    assert len(pieces) > 2 and abs(sum(w for _, w in pieces) - 1) < 1e-9
    for piece, _ in pieces:  # both rows of a pair in one piece, cut to its own longest row
        n = piece["ids"].shape[0] // 2
        assert piece["ids"].shape[0] == 2 * n and (n == 1 or piece["ids"].numel() <= 40)
        assert piece["mask"][:, -1].any()
    torch.manual_seed(0)
    net = RewardNet(make_rm("llama", tok).train())
    a, b = copy.deepcopy(net), copy.deepcopy(net)
    loss, extra, grads = _full_step(task, a, batch)
    engine = SGDEngine(b)
    loss_p, extra_p = accumulate_step(engine, task, b, pieces, "fp32", "cpu")
    assert loss_p == pytest.approx(loss, abs=1e-6) and extra_p["acc"] == pytest.approx(extra["acc"])
    _assert_same_step(grads, engine.grads, a, b)
    # the weights matter: an unweighted sum of the pieces' losses is not the batch's step
    c = copy.deepcopy(net)
    sum(task.loss(c, c, p)[0] for p, _ in pieces).backward()
    assert not all(_close(grads[n], q.grad) for n, q in c.named_parameters() if n in grads)


def test_bt_shared_prompt_step_equals_the_two_row_step_in_pieces_or_whole():
    """share_prompt: one row per pair gives the two-row batch's loss and gradient, whole or in token-budget pieces."""
    from umm_ray.records import PreferencePair

    tok = make_tokenizer()
    prompts = ["the cat sat on", "question one two", "list red blue", "sort five four three", "sum"]
    chosen = [" the mat", " yes good answer", " green", " three four five six seven eight nine ten", " ten"]
    rejected = [" bad", " no", " red red red blue green", " one", " two two"]
    pairs = [PreferencePair(p, c, r) for p, c, r in zip(prompts, chosen, rejected)]
    two_rows, shared = BTTask("dense", "unused", max_len=32), BTTask("dense", "unused", max_len=32, share_prompt=True)
    two_rows._tok = shared._tok = tok
    packed = shared.collate(pairs)
    assert packed["ids"].shape[0] == len(pairs) and packed["mask"].sum() < two_rows.collate(pairs)["mask"].sum()
    pieces = shared.micro_batches(packed, budget=24)
    assert len(pieces) > 2 and abs(sum(w for _, w in pieces) - 1) < 1e-9
    assert all(p["ids"].shape[0] == 1 or p["ids"].numel() <= 24 for p, _ in pieces)
    torch.manual_seed(0)
    net = RewardNet(make_rm("llama", tok).train())
    a, b, c = copy.deepcopy(net), copy.deepcopy(net), copy.deepcopy(net)
    loss, extra, grads = _full_step(two_rows, a, two_rows.collate(pairs))
    loss_s, extra_s, grads_s = _full_step(shared, b, packed)
    assert loss_s == pytest.approx(loss, abs=1e-6) and extra_s["acc"] == pytest.approx(extra["acc"])
    _assert_same_step(grads, grads_s, a, b)
    engine = SGDEngine(c)
    loss_p, _ = accumulate_step(engine, shared, c, pieces, "fp32", "cpu")
    assert loss_p == pytest.approx(loss, abs=1e-6)
    _assert_same_step(grads, engine.grads, a, c)


def _lm(seed=0):
    from transformers import AutoModelForCausalLM  # heavy: ~2 s

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(tiny_config("llama", 64)).float().train()


def test_sft_token_budget_step_equals_full_batch_step():
    g = torch.Generator().manual_seed(0)
    lengths, prompt_lens = [12, 3, 7, 20, 5, 9], [4, 1, 3, 6, 2, 3]
    T = max(lengths)
    ids = torch.randint(4, 64, (len(lengths), T), generator=g)
    mask = (torch.arange(T)[None] < torch.tensor(lengths)[:, None]).long()
    ids = ids * mask
    labels = ids.masked_fill(mask == 0, IGNORE)
    for row, n in enumerate(prompt_lens):
        labels[row, :n] = IGNORE
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    task = SFTTask("unused", max_len=32)
    pieces = task.micro_batches(batch, budget=24)
    assert len(pieces) > 2 and all(p["input_ids"].numel() <= 24 or len(p["input_ids"]) == 1 for p, _ in pieces)
    lm = _lm()
    a, b = copy.deepcopy(lm), copy.deepcopy(lm)
    loss, extra, grads = _full_step(task, a, batch)
    engine = SGDEngine(b)
    loss_p, extra_p = accumulate_step(engine, task, b, pieces, "fp32", "cpu")
    assert loss_p == pytest.approx(loss, abs=1e-5)
    assert extra_p["response_tokens"] == extra["response_tokens"]  # a count: summed over pieces
    _assert_same_step(grads, engine.grads, a, b)


def test_ppo_token_budget_step_equals_full_batch_step():
    from transformers import AutoModel  # heavy: ~2 s

    torch.manual_seed(0)
    model = ActorCritic(_lm(), AutoModel.from_config(tiny_config("llama", 64)).float())
    with torch.no_grad():
        model.value_head.weight.normal_(0, 0.5)  # non-zero values, so the value loss has gradients everywhere
    prompts = [[5, 6, 7], [8], [9, 10, 11, 12, 13, 14], [13, 14], [30, 31, 32]]
    responses = [[20, 21, 2], [22], [23, 24], [25, 26, 27, 28, 29, 40, 2], [41, 42]]
    b = make_policy_batch(prompts, responses, pad_id=0)
    m = b.response_mask
    with torch.no_grad():
        logits, values = model(b.input_ids, b.attention_mask, b.position_ids, b.prompt_width)
        old = gather_logprobs(logits, b.response_ids) * m
    g = torch.Generator().manual_seed(1)
    exp = Experience(b.input_ids, b.attention_mask, m, b.prompt_width, old_logprobs=old + 0.05 * m,
                     old_values=values * m, advantages=torch.randn(m.shape, generator=g) * m,
                     returns=torch.randn(m.shape, generator=g) * m)
    kw = {"clip_eps": 0.2, "value_clip": 0.2, "vf_coef": 0.5, "entropy_coef": 0.01}

    def loss_of(net, mb):
        lg, v = net(mb.input_ids, mb.attention_mask, mb.position_ids, mb.prompt_width)
        return joint_loss(lg, gather_logprobs(lg, mb.response_ids), v, mb.old_logprobs, mb.advantages,
                          mb.old_values, mb.returns, mb.response_mask, **kw)

    full, pieces_net = copy.deepcopy(model), copy.deepcopy(model)
    loss, stats = loss_of(full, exp)
    loss.backward()
    pieces = token_budget_pieces(exp, budget=20)
    assert len(pieces) > 2
    total, piece_stats = 0.0, {}
    for piece, w in pieces:
        piece_loss, s = loss_of(pieces_net, piece)
        (piece_loss * w).backward()
        total += w * piece_loss.item()
        piece_stats = {k: piece_stats.get(k, 0.0) + w * v for k, v in s.items()}
    assert total == pytest.approx(loss.item(), rel=1e-5, abs=1e-6)
    assert piece_stats == pytest.approx(stats, rel=1e-5, abs=1e-6)
    for (n, p), (_, q) in zip(full.named_parameters(), pieces_net.named_parameters()):
        assert (p.grad is None) == (q.grad is None), n
        if p.grad is not None:
            assert _close(p.grad, q.grad), n

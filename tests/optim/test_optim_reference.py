"""Each optimizer against an independent plain-loop implementation of its equations (float64)."""

import copy
import math

import pytest
import torch
from optim_helpers import TinyNet, batches, loss_fn

from hope.optim import DGD, M3, DeepMomentum, DeltaMomentum, Muon

QUINTIC, CUBIC = (3.4445, -4.7750, 2.0315), (1.5, -0.5, 0.0)
ADAMW = dict(lr=0.01, betas=(0.9, 0.95), eps=1e-8)


def ns(G, steps, coefficients):
    """Newton–Schulz written directly on the (out, rest) matrix, without the transposition trick."""
    a, b, c = coefficients
    X = G.reshape(G.shape[0], -1)
    X = X / X.norm()
    for _ in range(steps):
        A = X @ X.T
        X = a * X + b * A @ X + c * A @ A @ X
    return X.reshape(G.shape)


def is_matrix(model, name, p):
    return p.ndim >= 2 and name != "emb.weight"


class Reference:
    """Plain loop: per parameter, either the optimizer's equations (`matrix`) or AdamW."""

    def __init__(self, model, matrix):
        self.model, self.matrix, self.state, self.t = model, matrix, {}, 0

    def step(self, inputs=None):
        self.t += 1
        for name, p in self.model.named_parameters():
            s = self.state.setdefault(name, {})
            with torch.no_grad():
                if self.matrix is not None and self.matrix.owns(self.model, name, p):
                    p.copy_(self.matrix.update(name, p.detach().clone(), p.grad.clone(), s, self.t, inputs))
                else:
                    p.copy_(adamw(p.detach().clone(), p.grad.clone(), s, self.t))


def adamw(W, g, s, t, lr=ADAMW["lr"], betas=ADAMW["betas"], eps=ADAMW["eps"]):
    b1, b2 = betas
    s["m"] = b1 * s.get("m", 0 * g) + (1 - b1) * g
    s["v"] = b2 * s.get("v", 0 * g) + (1 - b2) * g * g
    m_hat, v_hat = s["m"] / (1 - b1**t), s["v"] / (1 - b2**t)
    return W - lr * m_hat / (v_hat.sqrt() + eps)


class RefM3:
    def __init__(
        self, lr, betas, alpha, f, T, eps, reading, coefficients=QUINTIC, slow=True, variance="gradient"
    ):
        self.__dict__.update(
            lr=lr,
            betas=betas,
            alpha=alpha,
            f=f,
            T=T,
            eps=eps,
            reading=reading,
            c=coefficients,
            slow=slow,
            variance=variance,
        )

    owns = staticmethod(is_matrix)

    def update(self, name, W, g, s, t, _):
        b1, b2, b3 = self.betas
        for k in ("M1", "V", "M2", "O2", "sum"):
            s.setdefault(k, torch.zeros_like(W))
        if self.reading == "ema":
            s["M1"] = b1 * s["M1"] + (1 - b1) * g
        else:  # Algorithm 1 as written
            s["M1"] = s["M1"] + b1 * g
        O1 = ns(s["M1"], self.T, self.c)
        x = g if self.variance == "gradient" else O1
        if self.reading == "ema":
            s["V"] = b2 * s["V"] + (1 - b2) * x**2
            V = s["V"] / (1 - b2**t)
        else:
            s["V"] = s["V"] + b2 * x**2
            V = s["V"]
        s["sum"] = s["sum"] + g
        W = W - self.lr * (O1 + self.alpha * s["O2"]) / (torch.sqrt(V) + self.eps)
        if self.slow and t % self.f == 0:
            s["M2"] = b3 * s["M2"] + (1 - b3) * s["sum"] if self.reading == "ema" else s["M2"] + b3 * s["sum"]
            s["O2"], s["sum"] = ns(s["M2"], self.T, self.c), torch.zeros_like(W)
        return W


class RefMuon:
    owns = staticmethod(is_matrix)

    def __init__(self, lr, mu, T):
        self.lr, self.mu, self.T = lr, mu, T

    def update(self, name, W, g, s, t, _):
        s["B"] = self.mu * s.get("B", torch.zeros_like(W)) + g
        rows, cols = W.shape[0], W[0].numel()
        return W - self.lr * 0.2 * math.sqrt(max(rows, cols)) * ns(g + self.mu * s["B"], self.T, QUINTIC)


class RefDeltaMomentum:
    owns = staticmethod(is_matrix)

    def __init__(self, lr, beta, delta):
        self.lr, self.beta, self.delta = lr, beta, delta

    def update(self, name, W, g, s, t, _):
        G = g.reshape(g.shape[0], -1)
        g_hat = G / G.norm()
        m = s.get("m", torch.zeros_like(G))
        s["m"] = (
            m @ (self.beta * torch.eye(G.shape[1], dtype=G.dtype) - self.delta * g_hat.T @ g_hat) + G
        )  # Eq. 49
        return W - self.lr * s["m"].reshape(W.shape)


class RefDeepMomentum:
    """Eq. 50 with the memory's internal dot-product objective differentiated by autograd."""

    owns = staticmethod(is_matrix)

    def __init__(self, lr, beta, h, seed):
        self.lr, self.beta, self.h, self.seed = lr, beta, h, seed

    def update(self, name, W, g, s, t, _):
        G = g.reshape(g.shape[0], -1)
        if not s:
            s["M"] = torch.zeros_like(G)
            s["A"] = torch.randn(
                G.shape[1], self.h, generator=torch.Generator().manual_seed(self.seed), dtype=torch.float64
            )
            s["B"] = torch.zeros(self.h, G.shape[1], dtype=torch.float64)
        keys = torch.stack([row / row.norm() for row in G])
        M, A, B = (s[k].clone().requires_grad_() for k in ("M", "A", "B"))
        with torch.enable_grad():
            inner_loss = -((M + torch.tanh(keys @ A) @ B) * G).sum()  # L⁽²⁾ = −⟨m_φ(û), g⟩
            dM, dA, dB = torch.autograd.grad(inner_loss, (M, A, B))
        s["M"] = self.beta * s["M"] - dM
        s["B"] = self.beta * s["B"] - dB / self.h
        s["A"] = s["A"] - dA / self.h
        read = s["M"] + torch.tanh(keys @ s["A"]) @ s["B"]
        return W - self.lr * read.reshape(W.shape)


class RefDGD:
    """Eq. 57 on nn.Linear weights; C averaged over rows by an explicit loop over the captured inputs."""

    def __init__(self, lr):
        self.lr = lr

    @staticmethod
    def owns(model, name, p):
        return name in ("hidden.weight", "head.weight")

    def update(self, name, W, g, s, t, inputs):
        x = inputs[name].reshape(-1, W.shape[1])
        C = torch.zeros(W.shape[1], W.shape[1], dtype=W.dtype)
        for row in x:
            x_hat = row / row.norm()
            C += torch.outer(x_hat, x_hat)
        C /= x.shape[0]
        eta = self.lr / (1 + self.lr)
        return W @ (torch.eye(W.shape[1], dtype=W.dtype) - eta * C) - eta * g


def run_pair(make_opt, reference, steps=7, capture_inputs=False):
    model = TinyNet()
    ref_model = copy.deepcopy(model)
    opt = make_opt(model)
    ref = Reference(ref_model, reference)
    inputs = {}
    if capture_inputs:
        for name in ("hidden", "head"):
            getattr(ref_model, name).register_forward_pre_hook(
                lambda m, args, name=name: inputs.__setitem__(f"{name}.weight", args[0].detach())
            )
    for step, (ids, targets) in enumerate(batches(steps)):
        opt.zero_grad()
        loss_fn(model, ids, targets).backward()
        opt.step()
        ref_model.zero_grad()
        loss_fn(ref_model, ids, targets).backward()
        ref.step(inputs)
        for (name, p), q in zip(model.named_parameters(), ref_model.parameters()):
            torch.testing.assert_close(
                p,
                q,
                atol=1e-10,
                rtol=1e-8,
                msg=lambda m, step=step, name=name: f"step {step + 1}, {name}: {m}",
            )
    return model


ADAMW_KW = dict(adamw_lr=ADAMW["lr"], adamw_betas=ADAMW["betas"], adamw_eps=ADAMW["eps"])


@pytest.mark.parametrize(
    "reading, coefficients, variance",
    [
        ("ema", "quintic", "gradient"),
        ("literal", "quintic", "gradient"),
        ("ema", "cubic", "gradient"),
        ("literal", "cubic", "orthogonalized"),
        ("ema", "quintic", "orthogonalized"),
    ],
)
def test_m3_matches_algorithm_1(reading, coefficients, variance):
    lr = 0.01 if reading == "ema" else 0.002
    kw = dict(lr=lr, betas=(0.9, 0.99, 0.8), alpha=0.7, frequency=3, ns_steps=4, eps=1e-8, reading=reading)
    run_pair(
        lambda m: M3(m, ns_coefficients=coefficients, variance=variance, **kw, **ADAMW_KW),
        RefM3(
            lr,
            (0.9, 0.99, 0.8),
            0.7,
            3,
            4,
            1e-8,
            reading,
            QUINTIC if coefficients == "quintic" else CUBIC,
            variance=variance,
        ),
    )


def test_m3_with_alpha_zero_is_its_fast_branch():
    run_pair(
        lambda m: M3(m, lr=0.01, alpha=0.0, frequency=2, **ADAMW_KW),
        RefM3(0.01, (0.9, 0.999, 0.9), 0.0, 2, 5, 1e-8, "ema", slow=False),
    )
    # …and then neither the slow decay nor the frequency can change the trajectory.
    finals = []
    for f, beta3 in ((2, 0.5), (5, 0.99)):
        model = TinyNet()
        opt = M3(model, lr=0.01, alpha=0.0, frequency=f, betas=(0.9, 0.999, beta3), **ADAMW_KW)
        for ids, targets in batches(6):
            opt.zero_grad()
            loss_fn(model, ids, targets).backward()
            opt.step()
        finals.append(torch.cat([p.flatten() for p in model.parameters()]))
    assert torch.equal(finals[0], finals[1])


def test_m3_slow_momentum_changes_only_at_frequency_boundaries():
    model = TinyNet()
    opt = M3(model, lr=0.01, frequency=3, **ADAMW_KW)
    W = model.conv.weight
    previous = {"M2": torch.zeros_like(W), "O2": torch.zeros_like(W)}
    for t, (ids, targets) in enumerate(batches(10), start=1):
        opt.zero_grad()
        loss_fn(model, ids, targets).backward()
        opt.step()
        for key in ("M2", "O2"):
            changed = not torch.equal(opt.state[W][key], previous[key])
            assert changed == (t % 3 == 0), f"{key} at step {t}"
            previous[key] = opt.state[W][key].clone()
        assert torch.count_nonzero(opt.state[W]["chunk_sum"]) == (0 if t % 3 == 0 else W.numel())


def test_muon_matches_eq_42():
    run_pair(lambda m: Muon(m, lr=0.02, momentum=0.9, ns_steps=5, **ADAMW_KW), RefMuon(0.02, 0.9, 5))


def test_delta_momentum_matches_eq_49():
    run_pair(
        lambda m: DeltaMomentum(m, lr=0.05, momentum=0.8, delta=0.6, **ADAMW_KW),
        RefDeltaMomentum(0.05, 0.8, 0.6),
    )


def test_deep_momentum_matches_eq_50():
    run_pair(
        lambda m: DeepMomentum(m, lr=0.05, momentum=0.8, hidden=5, seed=3, **ADAMW_KW),
        RefDeepMomentum(0.05, 0.8, 5, 3),
    )


def test_dgd_matches_eq_57():
    run_pair(lambda m: DGD(m, lr=0.3, **ADAMW_KW), RefDGD(0.3), capture_inputs=True)


def test_dgd_decay_uses_the_mean_over_accumulated_micro_batches():
    # Two micro-batches of one step must give the same C as one forward on their concatenation.
    ((ids, targets),) = batches(1, batch=4)
    results = []
    for chunks in (1, 2):
        model = TinyNet()
        opt = DGD(model, lr=0.3, **ADAMW_KW)
        opt.zero_grad()
        for part_ids, part_targets in zip(ids.chunk(chunks), targets.chunk(chunks)):
            (loss_fn(model, part_ids, part_targets) / chunks).backward()
        opt.step()
        results.append(model.hidden.weight.detach().clone())
    torch.testing.assert_close(results[0], results[1], atol=1e-12, rtol=0)


def test_dgd_ignores_forwards_without_grad_and_in_eval_mode():
    model, twin = TinyNet(), TinyNet()
    opt, twin_opt = DGD(model, lr=0.3), DGD(twin, lr=0.3)
    (ids, targets), (other, _) = batches(2)
    with torch.no_grad():
        model(other)
    model.eval()
    model(other)
    model.train()
    for m, o in ((model, opt), (twin, twin_opt)):
        loss_fn(m, ids, targets).backward()
        o.step()
    assert torch.equal(model.hidden.weight, twin.hidden.weight)

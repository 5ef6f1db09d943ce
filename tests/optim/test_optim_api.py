"""Factory, parameter routing, validation and state_dict round trips."""

import inspect
import io

import pytest
import torch
from optim_helpers import TinyNet, batches, train_steps
from torch import nn

from hope.optim import DGD, M3, OPTIMIZER_DEFAULTS, OPTIMIZERS, Muon, build_optimizer

NAMES = sorted(OPTIMIZER_DEFAULTS)


def params_of(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_mid_run_gives_identical_steps(name):
    data = batches(8)
    model = TinyNet()
    opt = build_optimizer(name, model, lr=OPTIMIZER_DEFAULTS[name]["lr"])
    train_steps(model, opt, data[:4])
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    train_steps(model, opt, data[4:])

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed = TinyNet(seed=123)  # different init: everything must come from the checkpoint
    resumed.load_state_dict(saved["model"])
    resumed_opt = build_optimizer(name, resumed, lr=OPTIMIZER_DEFAULTS[name]["lr"])
    resumed_opt.load_state_dict(saved["opt"])
    train_steps(resumed, resumed_opt, data[4:])
    assert torch.equal(params_of(model), params_of(resumed))


def test_routing_sends_embeddings_and_vectors_to_adamw():
    model = TinyNet()
    opt = M3(model)
    adamw = {id(p) for g in opt.param_groups if g["use_adamw"] for p in g["params"]}
    matrices = {id(p) for g in opt.param_groups if not g["use_adamw"] for p in g["params"]}
    assert adamw == {id(p) for n, p in model.named_parameters() if n == "emb.weight" or p.ndim == 1}
    assert matrices == {id(model.conv.weight), id(model.hidden.weight), id(model.head.weight)}


def test_tied_head_follows_its_embedding():
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 4), nn.Linear(4, 10, bias=False))
    model[2].weight = model[0].weight
    for opt in (Muon(model), DGD(model)):
        matrices = [p for g in opt.param_groups if not g["use_adamw"] for p in g["params"]]
        assert [id(p) for p in matrices] == [id(model[1].weight)]


def test_plain_tensors_and_explicit_groups_are_routed():
    w, b, e = nn.Parameter(torch.randn(3, 4)), nn.Parameter(torch.zeros(3)), nn.Parameter(torch.randn(5, 4))
    opt = Muon([{"params": [w, b]}, {"params": [e], "use_adamw": True, "lr": 0.5}], lr=0.1, adamw_lr=0.01)
    flags = {id(p): (g["use_adamw"], g["lr"]) for g in opt.param_groups for p in g["params"]}
    assert flags == {id(w): (False, 0.1), id(b): (True, 0.01), id(e): (True, 0.5)}


def test_lr_scheduler_scales_every_group():
    opt = M3(TinyNet(), lr=1e-3, adamw_lr=1e-2)
    torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5)
    assert sorted(g["lr"] for g in opt.param_groups) == [5e-4, 5e-3]


@pytest.mark.parametrize("name", NAMES)
def test_defaults_table_matches_the_constructors(name):
    model = TinyNet()
    hparams = {k: v for k, v in OPTIMIZER_DEFAULTS[name].items() if k not in ("lr", "weight_decay")}
    opt = build_optimizer(name, model, lr=0.123, weight_decay=0.01, **hparams)
    group = next(g for g in opt.param_groups if not g.get("use_adamw", False))
    assert group["lr"] == 0.123 and group["weight_decay"] == 0.01
    for key, value in hparams.items():
        if key in group:
            assert group[key] == value, key
    # Every constructor keyword is listed, so the CLI can show them all.
    listed = set(inspect.signature(OPTIMIZERS[name]).parameters) - {"params", "model"}
    assert listed == set(OPTIMIZER_DEFAULTS[name])


def test_bad_name_lists_the_accepted_values():
    with pytest.raises(ValueError, match=r"optimizer name must be one of .*'m3'.*got 'sgd'"):
        build_optimizer("sgd", TinyNet(), lr=0.1)


def test_unknown_hyperparameter_names_itself_and_the_accepted_ones():
    with pytest.raises(ValueError, match=r"\['beta'\].*'m3'.*accepted: .*'betas'.*'frequency'"):
        build_optimizer("m3", TinyNet(), lr=0.1, beta=0.9)


@pytest.mark.parametrize(
    "name, hparams, field",
    [
        ("m3", {"betas": (0.9, 1.0, 0.9)}, r"betas\[1\]"),
        ("m3", {"betas": (0.9, 0.99)}, "betas"),
        ("m3", {"frequency": 0}, "frequency"),
        ("m3", {"alpha": -1.0}, "alpha"),
        ("m3", {"ns_steps": 0}, "ns_steps"),
        ("m3", {"ns_coefficients": "septic"}, "ns_coefficients"),
        ("m3", {"reading": "sum"}, "reading"),
        ("m3", {"eps": 0.0}, "eps"),
        ("muon", {"scale": "unit"}, "scale"),
        ("muon", {"momentum": 1.5}, "momentum"),
        ("muon", {"adamw_lr": -1.0}, "adamw_lr"),
        ("delta_momentum", {"delta": 1.5}, "delta"),
        ("deep_momentum", {"hidden": 0}, "hidden"),
        ("adamw", {"betas": (0.9, -0.1)}, r"betas\[1\]"),
    ],
)
def test_bad_hyperparameter_names_the_field(name, hparams, field):
    with pytest.raises(ValueError, match=field):
        build_optimizer(name, TinyNet(), lr=0.1, **hparams)


@pytest.mark.parametrize("name", NAMES)
def test_negative_lr_is_rejected(name):
    with pytest.raises(ValueError, match="lr"):
        build_optimizer(name, TinyNet(), lr=-1.0)


def test_dgd_needs_a_module():
    with pytest.raises(ValueError, match="model"):
        DGD(list(TinyNet().parameters()))


def test_dgd_remove_hooks_stops_capturing():
    model = TinyNet()
    opt = DGD(model)
    opt.remove_hooks()
    ((ids, targets),) = batches(1)
    train_steps(model, opt, [(ids, targets)])
    assert not opt._stats and not model.hidden._forward_pre_hooks

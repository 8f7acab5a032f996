"""The flow-matching pieces without a model: noise-level samplers, packing, schedules, EMA."""

from __future__ import annotations

import math

import pytest
import torch

from lorabooth.core.train.ema import Ema, warmed_decay
from lorabooth.core.train.flow import pack, sample_sigmas, unpack
from lorabooth.core.train.optim import lr_lambda


def sigmas(kind: str, **kwargs) -> torch.Tensor:
    return sample_sigmas(kind, 8192, torch.Generator().manual_seed(0), image_tokens=4096,
                         **kwargs)


@pytest.mark.parametrize("kind", ["sigmoid", "logit_normal", "uniform", "shift", "flux_shift"])
def test_timestep_samplers_stay_inside_the_unit_interval(kind: str):
    drawn = sigmas(kind)
    assert 0 < float(drawn.min()) and float(drawn.max()) < 1


def test_the_samplers_do_what_their_names_say():
    middle = float(sigmas("sigmoid").mean())
    assert abs(middle - 0.5) < 0.02
    # logit_normal is the sigmoid sampler with its own mean and spread: they change it.
    assert torch.equal(sigmas("logit_normal"), sigmas("sigmoid"))
    assert float(sigmas("logit_normal", logit_mean=1.0).mean()) > middle + 0.1
    assert float(sigmas("logit_normal", logit_std=0.2).std()) < 0.1
    # kohya's shift (fixed 3.1582) and flux_shift (mu of 4096 tokens = 1.15) push to noise.
    assert float(sigmas("shift").median()) == pytest.approx(3.1582 / 4.1582, abs=0.02)
    mu = math.exp(1.15)
    assert abs(float(sigmas("flux_shift").median()) - mu / (mu + 1)) < 0.02


def test_pack_unpack_round_trip():
    x = torch.randn(2, 16, 8, 12)
    tokens = pack(x)
    assert tokens.shape == (2, 4 * 6, 64)
    assert torch.equal(unpack(tokens, 8, 12), x)


def test_cosine_follows_the_runs_own_total():
    """A continued run, or --steps beyond the config, must not train its tail at LR 0."""
    factor = lr_lambda(warmup=0, total=600, schedule="cosine")
    assert factor(0) == 1.0
    assert 0.4 < factor(300) < 0.6  # the middle of *this* run, not the end of a 300-step one
    assert factor(599) > 0


def test_ema_warms_up_and_stays_on_the_parameters_device():
    assert warmed_decay(0.999, 0) == pytest.approx(0.1)
    assert warmed_decay(0.999, 250) == pytest.approx(251 / 260)
    param = torch.nn.Parameter(torch.zeros(4))
    ema = Ema([param], 0.999)
    with torch.no_grad():
        param.fill_(1.0)
    for step in range(20):
        ema.update([param], step)
    # Without the warm-up the average would be 1 - 0.999**20 = 2% of the way to the weights.
    assert float(ema.averages[0].mean()) > 0.6
    ema.load([torch.full((4,), 0.5)], [param])
    assert ema.averages[0].device == param.device
    with ema.swapped_in([param]):
        assert float(param.detach().mean()) == 0.5
    assert float(param.detach().mean()) == 1.0


@pytest.mark.parametrize("tokens", [64, 256, 1024, 4096])
def test_flux_shift_is_flux1s_mu_and_flux2s_many_step_line(tokens: int):
    """flux_shift trains klein with FLUX.1's resolution shift: that is the line FLUX.2's own
    sampler uses at 200 steps (and above 4300 tokens), its step-count correction being a
    sampling matter, so both families draw training noise as their samplers expect."""
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift
    from diffusers.pipelines.flux2.pipeline_flux2_klein import compute_empirical_mu

    from lorabooth.core.train.flow import resolution_shift

    assert resolution_shift(tokens) == pytest.approx(calculate_shift(tokens), abs=1e-6)
    assert resolution_shift(tokens) == pytest.approx(compute_empirical_mu(tokens, 200),
                                                     abs=1e-4)

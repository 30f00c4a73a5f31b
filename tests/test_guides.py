"""Guides by name: the flow guide's pieces and its start, and the auto-guide table."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.autoguide.initialization import init_to_value

from pyro_vi_zoo import ZooError
from pyro_vi_zoo.guides.auto import AUTO_GUIDES, get_guide_info
from pyro_vi_zoo.guides.flows import AutoAffineIAF, ElementwiseAffine


def test_elementwise_affine_inverts_and_its_log_determinant_matches_autograd(device):
    transform = ElementwiseAffine(torch.tensor([1.0, -2.0, 0.5], device=device), scale=0.3)
    with torch.no_grad():
        transform.log_scale.add_(torch.tensor([0.1, -0.2, 0.3], device=device))
    x = torch.randn(3, device=device)
    y = transform(x)
    assert torch.allclose(transform.inv(y), x, atol=1e-6)
    jacobian = torch.autograd.functional.jacobian(transform, x)
    log_det = float(transform.log_abs_det_jacobian(x, y).detach())
    assert log_det == pytest.approx(float(torch.logdet(jacobian.cpu())), abs=1e-5)
    assert y.device == x.device


def two_site_model(origin):
    pyro.sample("a", dist.Normal(origin, 10.0))
    pyro.sample("b", dist.Normal(origin.expand(2), 10.0).to_event(1))


def test_affine_iaf_starts_small_at_the_initial_locations(device):
    origin = torch.zeros((), device=device)
    start = {"a": torch.tensor(3.0, device=device), "b": torch.tensor([-1.0, 2.0], device=device)}
    guide = AutoAffineIAF(two_site_model, init_loc_fn=init_to_value(values=start), init_scale=0.01)
    guide(origin)  # sets up the guide outside the plate of draws
    with torch.no_grad(), pyro.plate("draws", 2000, dim=-1):
        draws = guide(origin)
    assert draws["a"].device == origin.device
    assert abs(float(draws["a"].mean()) - 3.0) < 0.05 and float(draws["a"].std()) < 0.05
    assert torch.allclose(draws["b"].mean(0), start["b"], atol=0.05) and float(draws["b"].std(0).max()) < 0.05


def test_every_auto_guide_has_a_factory_and_unknown_names_are_refused():
    assert set(AUTO_GUIDES) == {"auto_normal", "auto_diag_normal", "auto_mvn", "auto_lowrank_mvn", "auto_iaf",
                                "auto_delta", "auto_laplace"}
    assert not get_guide_info("auto_delta").has_density and get_guide_info("auto_laplace").finalize is not None
    with pytest.raises(ZooError, match="unknown guide 'auto_flow'; choose one of: mean_field"):
        get_guide_info("auto_flow")


def test_the_hand_written_guides_share_no_parameter_in_one_param_store():
    """Pyro's param store is global: a program that uses two of the zoo's models must not hand one the other's
    parameters (the regression, BNN and AutoRec guides all learn a noise scale ``sigma``). The BNN guide starts
    its sigma at the targets' spread, whatever ran before it."""
    from pyro_vi_zoo.guides import AutoRecMeanField, bayes_regression_guide, bnn_regression_guide, gmm_mean_field
    from pyro_vi_zoo.models import BayesianAutoRec

    x, y = torch.linspace(-1.0, 1.0, 20).unsqueeze(-1), 100.0 * torch.linspace(-1.0, 1.0, 20)
    ratings = torch.rand(6, 5)
    autorec_guide = AutoRecMeanField(BayesianAutoRec(5, hidden=3))
    guides = {
        "bayes_regression": lambda: bayes_regression_guide(x, y),
        "bnn_regression": lambda: bnn_regression_guide(x, y, hidden=(4,)),
        "gmm": lambda: gmm_mean_field(torch.randn(10, 2)),
        "autorec": lambda: autorec_guide(ratings, ratings, torch.ones_like(ratings)),
    }
    names = {}
    for model, guide in guides.items():
        pyro.clear_param_store()
        guide()
        names[model] = set(pyro.get_param_store().keys())
        assert names[model] and all(name.startswith(f"{model}.") for name in names[model]), names[model]
    pyro.clear_param_store()
    for guide in guides.values():
        guide()
    assert len(pyro.get_param_store().keys()) == sum(len(found) for found in names.values())
    assert float(pyro.param("bnn_regression.sigma_loc").detach().exp()) == pytest.approx(float(y.std()), rel=1e-5)
    pyro.clear_param_store()

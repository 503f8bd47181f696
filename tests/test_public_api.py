"""The names the README uses import from the packages it names."""


def test_readme_imports():
    from facemetric import load_model  # noqa: F401
    from facemetric.eval import evaluate_verification  # noqa: F401
    from facemetric.losses import CenterLoss, L2SoftmaxLoss, alpha_lower_bound, build_loss  # noqa: F401
    from facemetric.models import build_model  # noqa: F401
    from facemetric.train import run_experiment

    assert callable(run_experiment)

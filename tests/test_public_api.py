"""The names the README uses import from the packages it names."""


def test_readme_imports():
    from facemetric import load_model  # noqa: F401
    from facemetric.eval import evaluate_verification  # noqa: F401
    from facemetric.losses import CenterLoss, L2SoftmaxLoss, alpha_lower_bound, build_loss  # noqa: F401
    from facemetric.models import build_model  # noqa: F401
    from facemetric.train import run_experiment

    assert callable(run_experiment)


def test_load_model_facade_is_the_inference_function():
    """``facemetric.load_model`` is a lazy facade (module ``__getattr__``) for
    :func:`facemetric.inference.embedder.load_model` itself, not a copy."""
    import facemetric
    from facemetric.inference.embedder import load_model

    assert facemetric.load_model is load_model
    assert "load_model" in dir(facemetric) and facemetric.__version__
    try:
        facemetric.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("an unknown attribute must raise AttributeError")


def test_moved_names_import_from_their_new_homes():
    from facemetric.data.samplers import SAMPLERS
    from facemetric.eval.embedding import embed_dataset, evaluate_pairs  # noqa: F401
    from facemetric.eval.pair_evaluator import PairSetEvaluator  # noqa: F401
    from facemetric.inference.embedding import embed_batches  # noqa: F401
    from facemetric.train import DATA_SOURCES, DataBundle  # noqa: F401
    from facemetric.train.data_sources import folder_source  # noqa: F401

    assert {"uniform", "pk"} <= set(SAMPLERS.names())
    assert "folder" in DATA_SOURCES and "digits" in DATA_SOURCES

"""`convkit serve`: a trained model behind HTTP (FastAPI + uvicorn) with dynamic batching, limits and a page.

* `create_app(source, **limits)`: the FastAPI app (`convkit.serve.app`);
* `Limits`: the limits and their defaults (`convkit.serve.limits`);
* the Open Inference Protocol v2 routes (`convkit.serve.oip`); the batcher (`convkit.serve.batcher`).

Needs the ``serve`` extra: ``pip install 'convkit[serve]'``.
"""

from convkit.serve.limits import Limits

__all__ = ["Limits", "create_app"]


def create_app(source, **limits):
    """See `convkit.serve.app.create_app` (imported on use: FastAPI is an optional dependency)."""
    from convkit.serve.app import create_app as create

    return create(source, **limits)

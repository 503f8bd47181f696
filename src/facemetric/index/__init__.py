"""Low-level vector search shared by the applications: exact chunked top-k by matrix products,
faiss indexes (flat, IVF), identity aggregation (max / mean over an identity's vectors) and the
k-NN of a set. Depends only on numpy, torch, faiss (optional) and :mod:`facemetric.errors`;
the gallery, identification metrics and clustering build on it.
"""

from facemetric.index.knn import KNN_BACKENDS, KnnResult, knn_search
from facemetric.index.search import (
    AGGREGATIONS,
    INDEX_KINDS,
    ExactIndex,
    FaissIndex,
    as_embeddings,
    build_index,
    faiss_available,
    first_distinct,
    identity_centroids,
    identity_score_blocks,
    top_identities_max,
    top_identities_mean,
    topk_inner_product,
)

__all__ = [
    "AGGREGATIONS",
    "INDEX_KINDS",
    "KNN_BACKENDS",
    "ExactIndex",
    "FaissIndex",
    "KnnResult",
    "as_embeddings",
    "build_index",
    "faiss_available",
    "first_distinct",
    "identity_centroids",
    "identity_score_blocks",
    "knn_search",
    "top_identities_max",
    "top_identities_mean",
    "topk_inner_product",
]

"""Clustering face embeddings without labels (k-NN graph + chinese whispers, connected
components or graph-restricted average-linkage), and clustering metrics against identities.

    from facemetric.cluster import cluster_embeddings, clustering_metrics
    labels = cluster_embeddings(emb, method="chinese-whispers", threshold=0.5, k=20)
    clustering_metrics(true_ids, labels)  # pairwise / BCubed P, R, F1, NMI, #clusters
"""

from facemetric.cluster.graph import (
    KnnResult,
    agglomerative,
    chinese_whispers,
    cluster_embeddings,
    connected_components,
    knn_search,
    similarity_graph,
)
from facemetric.cluster.metrics import bcubed_scores, clustering_metrics, pairwise_scores

__all__ = [
    "KnnResult",
    "agglomerative",
    "bcubed_scores",
    "chinese_whispers",
    "cluster_embeddings",
    "clustering_metrics",
    "connected_components",
    "knn_search",
    "pairwise_scores",
    "similarity_graph",
]

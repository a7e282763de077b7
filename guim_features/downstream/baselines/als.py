"""Implicit ALS baseline (Hu, Koren & Volinsky 2008) with Spark MLlib, on the train part.

Spark learns item factors from (user, item) pairs of the train part. A user is then *folded
in* from their test input (train + valid items) with the same implicit objective, solved in
closed form with the item factors fixed: x_u = (YᵀY + αYᵀ_u Y_u + λ n_u I)⁻¹ (1 + α) Yᵀ_u 1.
NOTE: Spark's factors for the train part alone would miss the valid event; folding in keeps
"learn on train, represent from the test input" the same for every method.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ...embedder import als_fold_in
from . import SCALED_LOGITS, Embeddings, Method


class ALS(Method):
    name = "als"

    def embed(self, data, seed: int) -> Embeddings:
        from pyspark.ml.recommendation import ALS as SparkALS

        from ...spark import get_spark

        b = self.cfg.bench
        spark = get_spark(self.cfg.spark)
        pairs = pd.DataFrame([(u, int(i)) for u in range(data.n_users) for i in np.unique(data.train_items(u))],
                             columns=["user", "item"]).astype("int32")
        df = spark.createDataFrame(pairs.assign(rating=np.float32(1.0)))
        model = SparkALS(rank=b.als_rank, maxIter=b.als_iters, regParam=b.als_reg, alpha=b.als_alpha,
                         implicitPrefs=True, userCol="user", itemCol="item", ratingCol="rating",
                         coldStartStrategy="drop", seed=seed).fit(df)
        f = model.itemFactors.toPandas()
        items = np.zeros((data.n_items, b.als_rank), dtype=np.float64)  # (V, r)
        items[f["id"].to_numpy()] = np.stack(f["features"].to_numpy())
        def fold(part) -> np.ndarray:                # (U, r) users folded in from part(u)
            return als_fold_in(items, [np.unique(part(u)) for u in range(data.n_users)], b.als_alpha, b.als_reg)

        # the train-part users only when the prior is chosen; predicted preferences (about 0..1), not logits
        return Embeddings(items, fold(data.test_input), valid_users=lambda: fold(data.train_items),
                          logit_scales=SCALED_LOGITS)

"""What BPR does to the ID embeddings of cold items (sampled as negatives, never as positives), for docs/coldstart.md:
MF on the embedded default with 20% cold items, its cold metrics forced on (as if it could score cold items) beside
random embeddings, and where the cold items' embeddings moved.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/cold_negatives.py [EPOCHS]
"""

import sys
import torch
import pytorch_lightning as pl
from recplug import RecDataModule, RecModule
from recplug.core.eval.evaluator import RankingEvaluation

epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 30
pl.seed_everything(0)
dm = RecDataModule(cold_items=0.2, cold_seed=0)
model = RecModule(dm.num_users, dm.num_items, lr=1e-3)
init = model.item_embedding.weight.detach().clone()
pl.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
           enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0).fit(model, dm)
cold = dm.data.cold_mask()
items = model.item_embedding.weight.detach()
users = model.user_embedding.weight.detach()

def metrics(u: torch.Tensor, i: torch.Tensor) -> dict[str, float]:
    ev = RankingEvaluation(ks=[20], metrics=["recall", "ndcg"])
    ev.start(dm, "test", u, i, None, cold_scored=True)
    ev.update(dm.eval_task("test").users)
    return {k: round(float(v), 4) for k, v in ev.compute().items()}

print("trained MF, cold forced:", metrics(users, items))
g = torch.Generator().manual_seed(0)
print("random embeddings     :", metrics(torch.randn(users.shape, generator=g), torch.randn(items.shape, generator=g)))
scores = users @ items.T
trained_users = torch.bincount(dm.data.split("train")[0], minlength=dm.num_users) > 0
s = scores[trained_users]
print(f"mean score: cold {float(s[:, cold].mean()):.4f}, warm {float(s[:, ~cold].mean()):.4f}")
rank = s.argsort(1, descending=True).argsort(1).float() / dm.num_items
print(f"mean rank percentile: cold {float(rank[:, cold].mean()):.3f}, warm {float(rank[:, ~cold].mean()):.3f}")
drift = (items - init).norm(dim=1)
print(f"item norm: cold {float(items[cold].norm(dim=1).mean()):.4f} (init {float(init[cold].norm(dim=1).mean()):.4f}), "
      f"warm {float(items[~cold].norm(dim=1).mean()):.4f}; moved from init: cold {float(drift[cold].mean()):.4f}, "
      f"warm {float(drift[~cold].mean()):.4f}")
mean_user = users[trained_users].mean(0)
cos = torch.nn.functional.cosine_similarity((items - init)[cold], -mean_user.expand(int(cold.sum()), -1))
print(f"cosine(cold item update, -mean user): {float(cos.mean()):.3f}")

"""ID-embedding views: matrix factorisation (MF-BPR) and VBPR's content view."""

from __future__ import annotations

from torch import Tensor, nn

from recplug.core.errors import ConfigError
from recplug.core.model.components import GraphEncoder
from recplug.core.model.types import GraphView, NodePlan, SampledBatch
from recplug.core.model.sampled import NodeTables
from recplug.core.ops.sampling import gather_rows


class IdEmbedding(GraphEncoder):
    """The ID embeddings themselves as a view: MF-BPR (Rendle et al., UAI 2009) when used alone.

    Args:
        name: view name (default ``"id"``).
    """

    def __init__(self, name: str = "id") -> None:
        super().__init__(name)

    def recplug_encode(self, ego_users: Tensor, ego_items: Tensor) -> GraphView:
        return GraphView(self.view_name, ego_users, ego_items)

    def sampling_refusal(self) -> None:
        return None

    def sample(self, batch: SampledBatch) -> NodePlan:
        return NodePlan(graph=batch)

    def encode_sampled(self, plan: NodePlan, tables: NodeTables) -> GraphView:
        batch = plan.graph
        assert isinstance(batch, SampledBatch)
        return GraphView(self.view_name, tables.users(batch.users), tables.items(batch.items))


class ContentView(GraphEncoder):
    """Items described by their fused content, users by a free preference vector over it.

    VBPR's visual term (He & McAuley, AAAI 2016): ``θ_u · (E f_i)``; with :class:`ConcatCombiner` and an
    :class:`IdEmbedding` view this is VBPR (item visual bias omitted). Needs a fusion plugin.

    Args:
        name: view name (default ``"content"``).
    """

    def __init__(self, name: str = "content") -> None:
        super().__init__(name)

    def recplug_build(self, num_users: int, embedding_dim: int) -> None:
        self.user_preference = nn.Embedding(num_users, embedding_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-draw ``θ_u`` (Xavier, as the ID tables)."""
        nn.init.xavier_uniform_(self.user_preference.weight)

    def recplug_check(self, has_content: bool) -> None:
        if not has_content:
            raise ConfigError("ContentView needs item content: set model.fusion (e.g. ConcatFusion)")

    def recplug_encode(self, content: Tensor) -> GraphView:
        return GraphView(self.view_name, self.user_preference.weight, content)

    def sampling_refusal(self) -> None:
        return None

    def sample(self, batch: SampledBatch) -> NodePlan:
        return NodePlan(content=batch.items, graph=batch)

    def encode_sampled(self, plan: NodePlan, tables: NodeTables) -> GraphView:
        batch = plan.graph
        assert isinstance(batch, SampledBatch)
        preference = gather_rows(self.user_preference.weight, batch.users.to(self.user_preference.weight.device))
        return GraphView(self.view_name, preference, tables.content(batch.items))

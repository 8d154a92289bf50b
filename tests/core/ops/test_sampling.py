"""Neighbour sampling (PyG's sampler): exact with fan-outs >= the largest degree, bounded otherwise, unbiased,
reproducible, row-sparse gradients."""

from __future__ import annotations

import pytest
import torch

from recplug.core.errors import ConfigError
from recplug.core.ops.sampling import NeighbourSampler, check_fanouts, gather_rows, propagate_mean
from recplug.core.ops.sparse import SparseOperator, normalized_adjacency, row_normalized


def bipartite(num_users: int = 30, num_items: int = 20, edges: int = 150, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    users = torch.randint(num_users, (edges,), generator=generator)
    items = torch.randint(num_items, (edges,), generator=generator)
    return normalized_adjacency(users, items, num_users, num_items)


@pytest.mark.parametrize("fanouts", [[], [0], [-2], ["a"], 3, [True], [2.5]])
def test_bad_fanouts_name_the_key(fanouts):
    with pytest.raises(ConfigError, match=r"model\.sampling\.fanouts"):
        check_fanouts(fanouts)


def test_an_unknown_engine_names_the_key():
    with pytest.raises(ConfigError, match=r"model\.sampling\.engine must be one of \['pyg', 'torch'\]"):
        NeighbourSampler(bipartite(), [2], "dgl")


try:  # the torch engine needs no PyG; the pyg engine needs pyg-lib
    from torch_geometric.typing import WITH_PYG_LIB as PYG_LIB
except ImportError:
    PYG_LIB = False
ENGINES = pytest.mark.parametrize(
    "engine", [pytest.param("pyg", marks=pytest.mark.skipif(not PYG_LIB, reason="pyg-lib has no wheel here")), "torch"]
)


@pytest.mark.skipif(PYG_LIB, reason="pyg-lib is installed: PyG samples with it")
def test_pyg_without_pyg_lib_is_refused_for_torch_sparse_non_uniform_draws():
    with pytest.raises(ConfigError, match=r"model\.sampling\.engine 'pyg' needs pyg-lib .* use engine: torch"):
        NeighbourSampler(bipartite(), [2], "pyg")


def test_torch_engine_draws_uniformly():
    star = NeighbourSampler(SparseOperator(torch.tensor([0, 4, 4, 4, 4, 4]), torch.tensor([1, 2, 3, 4]),
                                           torch.ones(4), (5, 5)), [2])
    torch.manual_seed(0)
    counts = torch.zeros(5)
    for _ in range(4000):
        nodes = star.sample(torch.tensor([0])).nodes
        counts.index_add_(0, nodes[1:], torch.ones(nodes.numel() - 1))
    # each of the 4 neighbours is among 2 draws with replacement with probability 1 - (3/4)^2
    torch.testing.assert_close(counts[1:] / 4000, torch.full((4,), 1 - 0.75**2), atol=0.03, rtol=0)


@ENGINES
@pytest.mark.parametrize("fanouts", [[-1, -1, -1], [50, 50, 50]])
def test_fanouts_at_least_the_degree_propagate_exactly(fanouts, engine):
    matrix = bipartite()
    dense = matrix.to_dense()
    x = torch.randn(matrix.shape[0], 4, dtype=torch.float64)
    layers, total = x, x
    for _ in fanouts:
        layers = dense.double() @ layers
        total = total + layers
    full = total / (len(fanouts) + 1)
    seeds = torch.tensor([3, 0, 41, 17, 35])
    sampled = NeighbourSampler(matrix, fanouts, engine).sample(seeds)
    assert torch.equal(sampled.nodes[: seeds.numel()], seeds)
    got = propagate_mean(sampled, x.float()[sampled.nodes]).double()
    torch.testing.assert_close(got, full[seeds], rtol=1e-5, atol=1e-6)


@ENGINES
def test_only_the_sampled_neighbourhood_is_reached(engine):
    matrix = bipartite(edges=400)
    dense = (matrix.to_dense() != 0).float()
    seeds = torch.tensor([1, 2, 35])
    sampled = NeighbourSampler(matrix, [2, 3], engine).sample(seeds)
    reach = torch.zeros(matrix.shape[0])
    reach[seeds] = 1
    within = reach.clone()
    for _ in range(2):
        within = ((within + dense @ within) > 0).float()
    assert bool(within[sampled.nodes].all()), "a node beyond 2 hops was sampled"
    assert sampled.nodes.unique().numel() == sampled.nodes.numel()
    assert torch.equal(sampled.nodes[: seeds.numel()], seeds)
    first, last = sampled.layers
    assert last.shape[0] == seeds.numel()
    degree = matrix.crow.diff()
    # the last layer: each seed keeps min(2, degree) neighbours; the first: hop-1 nodes keep min(3, degree)
    assert torch.equal(last.crow.diff(), degree[seeds].clamp(max=2))
    hop1 = sampled.nodes[seeds.numel() : first.shape[0]]
    assert torch.equal(first.crow.diff()[seeds.numel() :], degree[hop1].clamp(max=3))


@ENGINES
def test_sampled_rows_are_unbiased(engine):
    matrix = bipartite(edges=300)
    x = torch.randn(matrix.shape[0], 3, dtype=torch.float64)
    seeds = torch.tensor([0, 5, 33, 40])
    full = (matrix.to_dense().double() @ x)[seeds]
    sampler = NeighbourSampler(matrix, [2], engine)
    torch.manual_seed(0)
    draws = []
    for _ in range(2000):
        sampled = sampler.sample(seeds)
        layer = sampled.layers[0]
        draws.append(layer.to_dense().double() @ x[sampled.nodes][: layer.shape[1]])
    draws = torch.stack(draws)
    standard_error = draws.std(0) / len(draws) ** 0.5
    assert bool(((draws.mean(0) - full).abs() <= 4 * standard_error + 1e-9).all())
    assert bool((draws.std(0) > 0).any()), "some seed has more than 2 neighbours, so its rows vary"


@ENGINES
def test_sampling_is_reproducible_under_torch_seed(engine):
    sampler = NeighbourSampler(bipartite(edges=400), [3, 3], engine)
    seeds = torch.tensor([4, 9, 31])
    draws = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        draws.append(sampler.sample(seeds).nodes)
    assert torch.equal(draws[0], draws[1])
    assert not torch.equal(draws[0], draws[2])


@ENGINES
def test_rectangular_profiles_sample_one_hop_of_columns(engine):
    users = torch.tensor([0, 0, 0, 1, 2, 2])
    items = torch.tensor([1, 3, 4, 2, 0, 4])
    profiles = row_normalized(users, items, 3, 5)
    x = torch.randn(5, 2)
    sampled = NeighbourSampler(profiles, [-1], engine).sample(torch.tensor([2, 0]))
    columns, operator = sampled.sources()
    torch.testing.assert_close(operator(x[columns]), (profiles.to_dense() @ x)[torch.tensor([2, 0])])
    sampled = NeighbourSampler(profiles, [1], engine).sample(torch.tensor([0]))
    columns, operator = sampled.sources()
    assert columns.numel() == 1 and int(columns) in (1, 3, 4)
    torch.testing.assert_close(operator.to_dense(), torch.ones(1, 1))  # one of three, rescaled x3: the mean


def lightgcn_mean(matrix: SparseOperator, x: torch.Tensor, hops: int) -> torch.Tensor:
    dense = matrix.to_dense().double()
    layer, total = x, x
    for _ in range(hops):
        layer = dense @ layer
        total = total + layer
    return total / (hops + 1)


def test_a_budget_bounds_the_new_nodes_per_hop_and_keeps_the_two_hop_mean_unbiased():
    matrix = bipartite(num_users=60, num_items=40, edges=600)
    x = torch.randn(matrix.shape[0], 3, dtype=torch.float64)
    seeds = torch.tensor([0, 7, 21, 65, 80])
    full = lightgcn_mean(matrix, x, 2)[seeds]
    sampler = NeighbourSampler(matrix, [4, 4], "torch")
    generator = torch.Generator().manual_seed(0)
    draws, new_nodes = [], []
    for _ in range(3000):
        sampled = sampler.sample(seeds, generator, budget=6)
        new_nodes.append(sampled.nodes.numel() - seeds.numel())
        draws.append(propagate_mean(sampled, x.float()[sampled.nodes]).double())
    draws = torch.stack(draws)
    unbudgeted = NeighbourSampler(matrix, [4, 4], "torch").sample(seeds, torch.Generator().manual_seed(0))
    assert unbudgeted.nodes.numel() - seeds.numel() > 20, "the test's fan-outs must reach more than the budget"
    assert sum(new_nodes) / len(new_nodes) <= 2 * 6, "at most the budget per hop, in expectation"
    standard_error = draws.std(0) / len(draws) ** 0.5
    assert bool(((draws.mean(0) - full).abs() <= 4 * standard_error + 1e-9).all())


def test_a_budget_above_the_neighbourhood_changes_nothing():
    matrix = bipartite(edges=400)
    seeds = torch.tensor([1, 2, 35])
    sampler = NeighbourSampler(matrix, [2, 3], "torch")
    plain = sampler.sample(seeds, torch.Generator().manual_seed(3))
    budgeted = sampler.sample(seeds, torch.Generator().manual_seed(3), budget=10_000)
    assert torch.equal(plain.nodes, budgeted.nodes)
    for a, b in zip(plain.layers, budgeted.layers):
        assert torch.equal(a.to_dense(), b.to_dense())


def test_gathered_rows_get_a_row_sparse_gradient():
    table = torch.randn(10, 3, requires_grad=True)
    ids = torch.tensor([1, 4, 7])
    (gather_rows(table, ids) * torch.arange(3.0)).sum().backward()
    assert table.grad.is_sparse
    expected = torch.zeros(10, 3)
    expected[ids] = torch.arange(3.0)
    torch.testing.assert_close(table.grad.to_dense(), expected)

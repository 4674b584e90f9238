"""The private torch APIs the trainer uses, pinned: if a torch release changes them, this
fails rather than the NaN guard or the gradient norm going quietly wrong.

- `torch._foreach_norm`: `trainer.total_norm` (the gradient norm) and
  `Trainer.check_finite` (the weights' norms in float64);
- `GradScaler._get_scale_async`: the loss scale of a step, read as a tensor so the host
  does not wait for the device;
- `torch.utils.tensorboard._pytorch_graph.parse` and `SummaryWriter._get_file_writer`:
  the model graph, traced once (`figures.model_graph`) and written as `add_graph` writes
  it;
- Hydra's `ConfigLoaderImpl._parse_overrides_and_create_caching_repo`: each config
  group's options for the option check (`checks.group_options`), the search path made
  once per command rather than once per group.
"""

from __future__ import annotations

import math

import torch

from trainlab.engine.trainer import total_norm


def test_foreach_norm_is_each_tensors_2_norm() -> None:
    generator = torch.Generator().manual_seed(0)
    tensors = [torch.randn(shape, generator=generator) for shape in ((3,), (4, 5), (2, 3, 4))]
    norms = torch._foreach_norm(tensors)
    assert [n.item() for n in norms] == [torch.linalg.vector_norm(t).item() for t in tensors]
    wide = torch._foreach_norm(tensors, dtype=torch.float64)
    assert all(n.dtype == torch.float64 for n in wide)
    expected = [torch.linalg.vector_norm(t.double()).item() for t in tensors]
    assert [n.item() for n in wide] == expected
    # Finite float32 values whose float32 norm would overflow stay finite in float64.
    huge = torch.full((4,), 3e38)
    assert math.isinf(torch._foreach_norm([huge])[0].item())
    assert math.isfinite(torch._foreach_norm([huge], dtype=torch.float64)[0].item())


def test_total_norm_equals_torch_get_total_norm_and_carries_inf_and_nan() -> None:
    generator = torch.Generator().manual_seed(1)
    gradients = [torch.randn(shape, generator=generator) for shape in ((8,), (8, 4), (4,))]
    assert torch.allclose(
        total_norm(gradients), torch.nn.utils.get_total_norm(gradients), rtol=1e-6
    )
    assert total_norm([]).item() == 0.0
    with_inf = [gradients[0], torch.tensor([1.0, float("inf")])]
    assert math.isinf(total_norm(with_inf).item())
    with_nan = [gradients[0], torch.tensor([float("nan"), 1.0])]
    assert math.isnan(total_norm(with_nan).item())


def test_grad_scaler_scale_async_is_the_scale_as_a_tensor() -> None:
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=1000)
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    scaler.scale((weight * 2).sum()).backward()
    scale = scaler._get_scale_async()
    assert isinstance(scale, torch.Tensor) and scale.item() == scaler.get_scale() == 1024.0
    scaler.step(optimizer)
    scaler.update()
    # An overflowing step halves the scale; the tensor read says so too.
    optimizer.zero_grad()
    scaler.scale((weight * float("inf")).sum()).backward()
    scaler.step(optimizer)
    scaler.update()
    assert scaler._get_scale_async().item() == scaler.get_scale() == 512.0


@torch.no_grad()
def test_a_graph_traced_once_is_written_as_add_graph_writes_it(tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    from trainlab.components.callbacks.figures import model_graph
    from trainlab.components.models.mlp import MLP

    model, example = MLP([8], 3, [16], dropout=0.2).eval(), torch.randn(2, 8)
    graphs = []
    for name in ("torch", "trainlab"):
        with SummaryWriter(tmp_path / name) as writer:
            if name == "torch":
                writer.add_graph(model, example)
            else:
                writer._get_file_writer().add_graph(model_graph(model, example))
        events = EventAccumulator(str(tmp_path / name))
        events.Reload()
        graphs.append(events.Graph().SerializeToString())
    assert graphs[0] == graphs[1] and len(graphs[0]) > 100


def test_group_options_are_hydras_for_every_group_and_search_path(tmp_path) -> None:
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from trainlab.app.checks import group_options

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "mine.yaml").write_text("_target_: x.Y\n")
    GlobalHydra.instance().clear()
    with initialize_config_module("trainlab.configs", version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        groups = [g for g in loader.list_groups("") if g != "hydra"]
        groups += [f"hydra/{g}" for g in loader.list_groups("hydra")]
        assert {"model", "optim", "experiment", "hydra/sweeper"} <= set(groups)
        for overrides in ([], ["model=cnn"], [f"hydra.searchpath=[file://{tmp_path}]"]):
            options_of = group_options(loader, "train", overrides)
            for group in groups:
                hydras = loader.get_group_options(group, config_name="train", overrides=overrides)
                assert options_of(group) == hydras, (group, overrides)
        assert "mine" in group_options(loader, "train", overrides)("model")
    GlobalHydra.instance().clear()

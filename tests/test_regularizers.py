import torch

from training.regularizers import edge_aware_smoothness


def test_constant_maps_cost_nothing():
    image = torch.rand(2, 2, 32, 32)
    assert edge_aware_smoothness(torch.full((2, 3, 8, 8), 0.7), image, stride=4).item() == 0.0


def test_a_boundary_on_an_image_edge_is_cheaper_than_one_across_background():
    image = torch.zeros(1, 1, 64, 64)
    image[..., :, :32] = 1.0  # a bright cell on the left half
    on_edge = torch.zeros(1, 1, 16, 16)
    on_edge[..., :, :8] = 1.0  # the map follows the cell
    halo = torch.zeros(1, 1, 16, 16)
    halo[..., :, :11] = 1.0  # the map spills 3 map pixels into the background
    cost_edge = edge_aware_smoothness(on_edge, image, stride=4)
    cost_halo = edge_aware_smoothness(halo, image, stride=4)
    assert cost_edge.item() < 1e-6 < cost_halo.item()


def test_gradient_flows_to_the_maps_and_odd_sizes_work():
    maps = torch.rand(1, 2, 9, 7, requires_grad=True)
    loss = edge_aware_smoothness(maps, torch.rand(1, 2, 33, 27), stride=4, radius=3)
    loss.backward()
    assert torch.isfinite(maps.grad).all() and maps.grad.abs().sum() > 0

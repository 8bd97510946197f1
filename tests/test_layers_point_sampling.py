"""projects.layers.point_sampling: bilinear point sampling and where the points go."""

import pytest
import torch

from projects.layers import (
    bilinear_sample_rows,
    point_sample,
    regular_grid_point_coords,
    uncertain_point_coords_on_grid,
    uncertain_point_coords_with_randomness,
)


def test_point_sample_reads_pixel_centers_and_interpolates():
    fmap = torch.arange(12.0).view(1, 1, 3, 4)  # value = 4 * row + col
    centers = torch.tensor([[[0.5 / 4, 0.5 / 3], [3.5 / 4, 2.5 / 3], [1.5 / 4, 1.5 / 3]]])
    torch.testing.assert_close(
        point_sample(fmap, centers, align_corners=False)[0, 0], torch.tensor([0.0, 11.0, 5.0])
    )
    # Halfway between the centers of (row 1, col 1) and (row 1, col 2): their mean.
    mid = torch.tensor([[[2.0 / 4, 1.5 / 3]]])
    torch.testing.assert_close(
        point_sample(fmap, mid, align_corners=False)[0, 0], torch.tensor([5.5])
    )


def test_point_sample_shapes():
    fmap = torch.randn(2, 5, 8, 8)
    assert point_sample(fmap, torch.rand(2, 7, 2), align_corners=False).shape == (2, 5, 7)
    assert point_sample(fmap, torch.rand(2, 3, 4, 2), align_corners=False).shape == (2, 5, 3, 4)
    with pytest.raises(ValueError, match="point_coords"):
        point_sample(fmap, torch.rand(2, 7, 3))


def test_regular_grid_is_cell_centers_row_major():
    grid = regular_grid_point_coords(3, 4, torch.device("cpu"))
    assert grid.shape == (3, 16, 2)
    centers = (torch.arange(4.0) + 0.5) / 4
    torch.testing.assert_close(grid[2].view(4, 4, 2)[..., 0], centers.expand(4, 4))
    torch.testing.assert_close(grid[0].view(4, 4, 2)[..., 1], centers[:, None].expand(4, 4))
    # Sampling a map on its own cell grid returns the map.
    fmap = torch.randn(3, 2, 4, 4)
    torch.testing.assert_close(point_sample(fmap, grid, align_corners=False).view(3, 2, 4, 4), fmap)


def _neg_abs(logits):
    return -logits.abs()


def test_importance_sampling_keeps_most_uncertain_of_oversampled():
    # Hand-built logits: a vertical ramp, zero (most uncertain) on the middle column.
    logits = torch.linspace(-3, 3, 7).view(1, 1, 1, 7).expand(2, 1, 7, 7).contiguous()
    num_points, k, beta = 20, 3, 0.75
    torch.manual_seed(0)
    coords = uncertain_point_coords_with_randomness(logits, _neg_abs, num_points, k, beta)
    assert coords.shape == (2, num_points, 2)

    torch.manual_seed(0)  # replay the draws: the oversampled candidates, then the random ones
    candidates = torch.rand(2, k * num_points, 2)
    fresh = torch.rand(2, num_points - 15, 2)
    uncertainty = -point_sample(logits, candidates, align_corners=False)[:, 0].abs()
    for n in range(2):
        chosen, rest = coords[n, :15], coords[n, 15:]
        # The 15 importance points are exactly the 15 most uncertain candidates.
        expected = candidates[n, uncertainty[n].argsort(descending=True)[:15]]
        assert sorted(map(tuple, chosen.tolist())) == sorted(map(tuple, expected.tolist()))
        # ... all closer to the zero crossing (x = 0.5) than any rejected candidate.
        kept = set(map(tuple, chosen.tolist()))
        rejected = torch.stack([c for c in candidates[n] if tuple(c.tolist()) not in kept])
        assert (chosen[:, 0] - 0.5).abs().max() <= (rejected[:, 0] - 0.5).abs().min() + 1e-6
        torch.testing.assert_close(rest, fresh[n])  # the remaining 25 % are uniform draws


def test_importance_sampling_extremes_and_errors():
    logits = torch.randn(3, 2, 5, 5)
    torch.manual_seed(0)
    all_random = uncertain_point_coords_with_randomness(logits, lambda x: x[:, :1], 8, 2, 0.0)
    torch.manual_seed(0)
    torch.rand(3, 16, 2)  # the oversampled candidates are still drawn first
    torch.testing.assert_close(all_random, torch.rand(3, 8, 2))
    only_uncertain = uncertain_point_coords_with_randomness(logits, lambda x: x[:, :1], 8, 1, 1.0)
    assert only_uncertain.shape == (3, 8, 2)
    with pytest.raises(ValueError, match="oversample_ratio"):
        uncertain_point_coords_with_randomness(logits, _neg_abs, 8, 0.5, 0.5)
    with pytest.raises(ValueError, match="importance_sample_ratio"):
        uncertain_point_coords_with_randomness(logits, _neg_abs, 8, 3, 1.5)


def test_uncertain_points_on_grid_picks_top_cells():
    uncertainty = torch.full((2, 1, 4, 8), -5.0)
    uncertainty[0, 0, 1, 6] = 0.0  # most uncertain
    uncertainty[0, 0, 3, 0] = -1.0
    uncertainty[1, 0, 0, 2] = -0.5
    uncertainty[1, 0, 2, 7] = -0.1
    indices, coords = uncertain_point_coords_on_grid(uncertainty, 2)
    assert indices.tolist() == [[1 * 8 + 6, 3 * 8 + 0], [2 * 8 + 7, 0 * 8 + 2]]
    torch.testing.assert_close(coords[0, 0], torch.tensor([6.5 / 8, 1.5 / 4]))
    torch.testing.assert_close(coords[1, 1], torch.tensor([2.5 / 8, 0.5 / 4]))
    # Asking for more points than cells returns every cell.
    indices, coords = uncertain_point_coords_on_grid(uncertainty, 100)
    assert indices.shape == (2, 32) and coords.shape == (2, 32, 2)
    assert sorted(indices[0].tolist()) == list(range(32))


@pytest.mark.parametrize("channels_last", [False, True])
def test_bilinear_sample_rows_equals_grid_sample(channels_last):
    """The gather-based CPU sampler computes grid_sample's bilinear / zero-padding values,
    including points near and beyond the border (neighbours outside count as zero)."""
    generator = torch.Generator().manual_seed(0)
    maps = torch.randn(3, 17, 9, 13, generator=generator)
    if channels_last:
        maps = maps.contiguous(memory_format=torch.channels_last)
    points = torch.rand(3, 50, 2, generator=generator) * 1.4 - 0.2  # 20 % outside per side
    points[0, :4] = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.5 / 13, 0.5 / 9], [1.0, 0.0]])
    expected = torch.nn.functional.grid_sample(
        maps, 2 * points.unsqueeze(2) - 1, align_corners=False
    ).squeeze(3)
    rows = bilinear_sample_rows(maps, points.reshape(-1, 2), 50)
    assert rows.shape == (150, 17)
    torch.testing.assert_close(rows.view(3, 50, 17).transpose(1, 2), expected)


def test_point_sample_single_map_inference_path_matches_training_path():
    """Without gradients one CPU map is sampled by the gather path; with them by grid_sample.
    Both give the same values (to float rounding)."""
    fmap = torch.randn(1, 32, 20, 30, requires_grad=True)
    points = torch.rand(1, 5000, 2)
    with_grad = point_sample(fmap, points, align_corners=False)
    assert with_grad.requires_grad
    with torch.no_grad():
        without = point_sample(fmap, points, align_corners=False)
    assert without.shape == with_grad.shape == (1, 32, 5000)
    torch.testing.assert_close(without, with_grad.detach())
    with torch.no_grad():  # empty inputs keep their shapes
        assert point_sample(fmap, torch.rand(1, 0, 2), align_corners=False).shape == (1, 32, 0)

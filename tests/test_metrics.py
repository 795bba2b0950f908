import torch

from ppl_audit.metrics import average_deviation, count_distinct, fraction_in_band, target_confidence


def test_average_deviation_known_values():
    probs = torch.tensor([[0.4, 0.6], [0.5, 0.5]])
    assert abs(average_deviation(probs, torch.tensor([0.5, 0.5])) - 0.05) < 1e-7
    ten = torch.full((3, 10), 0.1)
    assert average_deviation(ten, torch.full((10,), 0.1)) < 1e-7


def test_target_confidence_uses_the_target_top_class():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8]])
    assert target_confidence(probs, torch.tensor([0.999, 0.001])).tolist() == [0.8999999761581421, 0.20000000298023224]
    assert target_confidence(probs, torch.tensor([0.001, 0.999])).tolist() == [0.10000000149011612, 0.800000011920929]


def test_band_and_distinct():
    assert fraction_in_band(torch.tensor([0.45, 0.5, 0.56, 0.1])) == 0.5
    assert count_distinct(torch.tensor([[1.0], [1.0], [2.0]])) == 2

"""Tiny network configs shared by the tests (fast on a CPU; not a model anyone should use)."""

#: DiffusionModelUNet with attention on its last level, for sampler/fast-path/bundle tests.
TINY_ATTENTION = dict(
    spatial_dims=2,
    in_channels=2,
    out_channels=1,
    channels=(8, 16),
    attention_levels=(False, True),
    num_res_blocks=1,
    num_head_channels=8,
    norm_num_groups=8,
)
#: The same without attention: sampling whole example volumes through the CLI takes seconds.
TINY_NO_ATTENTION = {**TINY_ATTENTION, "attention_levels": (False, False)}


def tiny_attention_network(seed: int = 0):  # noqa: ANN201  (torch is imported lazily: this module is imported early)
    """:data:`TINY_ATTENTION` with seeded weights and a non-trivial output layer (MONAI zero-initialises it,
    which would make every prediction 0 and comparisons between code paths meaningless)."""
    import torch

    from seg2med_core.network import build_network

    torch.manual_seed(seed)
    net = build_network(TINY_ATTENTION)
    with torch.no_grad():
        for p in net.out.parameters():
            p.normal_(0, 0.1)
    return net

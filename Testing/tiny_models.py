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

"""MoleBLEND model (SPEC 2-5): `MoleBlend` (pretraining) and its backbone `MoleBlendEncoder`."""

from moleblend_jax.model.blend import PAIR_3D, PAIR_EDGE, PAIR_SPD
from moleblend_jax.model.config import ModelConfig
from moleblend_jax.model.encoder import EncoderOutput, MoleBlendEncoder, atoms_with_coords
from moleblend_jax.model.moleblend import MoleBlend

THREE_D_SUBMODULES = ("gaussian_basis", "gaussian_bias", "centrality")
TWO_D_SUBMODULES = ("spd_bias", "edge_bias", "degree_embed")

__all__ = [
    "PAIR_3D",
    "PAIR_EDGE",
    "PAIR_SPD",
    "THREE_D_SUBMODULES",
    "TWO_D_SUBMODULES",
    "EncoderOutput",
    "ModelConfig",
    "MoleBlend",
    "MoleBlendEncoder",
    "atoms_with_coords",
]

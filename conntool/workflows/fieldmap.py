"""The PEPOLAR field node, as the fMRI and dMRI workflows both build it."""
from __future__ import annotations

from nipype.pipeline import engine as pe

from conntool.bids import PeImage
from conntool.interfaces.fieldmap import PepolarField


def pepolar_field_node(first: PeImage, reverse: PeImage, regularization: float, sidecar: dict,
                       **resources) -> pe.Node:
    """Node ``pepolar_field``: the field (Hz, on ``first``'s grid) from the mean of each image's
    volumes; ``sidecar`` is completed with the sources and the method."""
    return pe.Node(PepolarField(
        first=str(first.path), first_volumes=list(first.volumes), first_pe=first.phase_encoding_dir,
        first_readout_s=first.readout_s, reversed_file=str(reverse.path), reversed_volumes=list(reverse.volumes),
        reversed_pe=reverse.phase_encoding_dir, reversed_readout_s=reverse.readout_s, regularization=regularization,
        sidecar={**sidecar, "Sources": [str(first.path), str(reverse.path)], "Regularization": regularization,
                 "Method": "pepolar: B-spline field unwarping both images to agree, with the Jacobian "
                           "(topup's model; conntool.steps.pepolar)"}),
        name="pepolar_field", **resources)

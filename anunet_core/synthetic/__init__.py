"""Synthetic abdomen phantoms (CT and MR) and the archives that hold them, for demos and tests.

A phantom is one 3D scan of a made-up abdomen with its label map (TotalSegmentator's label
values, :data:`anunet_core.vocabulary.TOTALSEG_LABELS`): the organs the ANU-Net paper segments
(liver with vessels and lesions, spleen, both kidneys) among the structures around them, drawn
in millimetres so a phantom of any ``shape`` and ``spacing`` shows the same anatomy.
``image`` and ``labels`` are ``(I, J, K)`` with ``k`` axial and a RAS+ affine; CT in HU, MR
in arbitrary units.

One concept per module:

- ``phantom``: :class:`Phantom`, :func:`make_phantom`, :func:`case_seed`; arrays and geometry;
- ``tissues``: the tissue classes and their CT and MR intensities (:data:`TISSUES`);
- ``shapes``: drawing primitives (the body-centred grid, deformed blobs, smooth noise, painter);
- ``anatomy``: the structures, one function each, and the label table;
- ``appearance``: tissue map -> CT or MR image (texture, partial volume, noise, bias field);
- ``baseline``: :func:`trivial_predictor_dice`, what a predictor that learns nothing scores;
- ``nifti``: :func:`write_nifti_pairs`, :func:`write_msd`, :func:`write_lits`;
- ``dicom``: :func:`write_dicom_series`, :func:`write_dicom_archive`;
- ``chaos``: :func:`write_chaos_mr` and :func:`write_png_gray`;
- ``archive``: :func:`make_archive` and the format/layout table;
- ``hard_cases``: :func:`make_qc_cohort`, a CT test cohort with cases made hard on purpose
  (:data:`HARD_KINDS`) for quality control, and ``cohort.json`` naming each case's kind;
- ``files``: atomic file and folder writes shared by the writers.

Why it is hard (a model that learns nothing scores badly)
    Contrast-enhanced liver (100-140 HU) and spleen (110-150 HU) are drawn independently per
    case, so their intensities overlap and swap: they are told apart only by shape and
    position (liver right and anterior, spleen left and posterior). Enhancing bowel wall
    (70-140 HU), the pancreas, the IVC and mesenteric veins, the heart and the renal medulla
    share the liver's intensity window; lesions and vessels make the liver heterogeneous, and
    the noise (10-20 HU sd) blurs the rest. Position, size and shape vary per case: the
    patient lies off-centre by up to 25 mm (left-right) and 18 mm (front-back), the scan range
    shifts by +-35 mm along z (cropping the liver dome or the lower renal poles), body and
    organ sizes vary by about +-15-20 % per axis, and random low-frequency surface modes
    deform every organ. MR adds a per-case gain, +-15 % per-tissue jitter, a bias field
    (x0.7 .. x1.4 across the body) and Rician noise. Scores of predictors that learn nothing
    (:func:`trivial_predictor_dice`, 12 training and 6 test phantoms, five cohorts): liver
    Dice 0.50-0.65 for the fixed mask, 0.59-0.63 for the best CT HU window, 0.37-0.58 for the
    best T2SPIR and 0.40-0.66 for the best T1 intensity window; spleen and kidneys at most
    0.48. So a trained model's liver Dice of 0.9 or more comes from learning shape and
    context.

Archives (the layouts ``jobs/ingest.py`` discovers; files are written to a temporary name and
renamed, DICOM series and CHAOS folders as a whole folder):

- :func:`write_nifti_pairs`: ``OUT/<case_id>/image.nii.gz`` + ``labels.nii.gz``
- :func:`write_msd`: ``OUT/imagesTr/<case_id>.nii.gz`` + ``OUT/labelsTr/<case_id>.nii.gz`` +
  ``dataset.json`` (labels: organ = 1, background = 0)
- :func:`write_lits`: ``OUT/volume-N.nii`` + ``OUT/segmentation-N.nii`` (liver 1, lesion 2)
- :func:`write_dicom_archive`: ``OUT/<case_id>/dicom/<SOPInstanceUID>.dcm`` +
  ``OUT/<case_id>/labels.nii.gz``
- :func:`write_chaos_mr`: ``OUT/MR/<n>/T2SPIR/DICOM_anon/IMG-0001-00001.dcm ...`` +
  ``OUT/MR/<n>/T2SPIR/Ground/IMG-0001-00001.png ...``
- :func:`make_archive`: the single entry point of ``jobs/make_synthetic.py``.

Example::

    >>> p = make_phantom(seed=7, modality="CT")
    >>> p.image.shape, p.image.dtype, p.labels.dtype
    ((128, 128, 48), dtype('float32'), dtype('uint8'))
    >>> nib.aff2axcodes(p.affine), p.spacing
    (('R', 'A', 'S'), (3.0, 3.0, 5.0))
    >>> case_dirs = make_archive("/tmp/synthetic-ct", cases=2, modality="CT", fmt="nifti")
    >>> [d.name for d in case_dirs]
    ['case_0000', 'case_0001']
"""

from anunet_core.synthetic.archive import make_archive
from anunet_core.synthetic.baseline import trivial_predictor_dice
from anunet_core.synthetic.chaos import write_chaos_mr, write_png_gray
from anunet_core.synthetic.dicom import (
    CT_IMAGE_STORAGE,
    MR_IMAGE_STORAGE,
    write_dicom_archive,
    write_dicom_series,
)
from anunet_core.synthetic.hard_cases import HARD_KINDS, make_qc_cohort
from anunet_core.synthetic.nifti import write_lits, write_msd, write_nifti_pairs
from anunet_core.synthetic.phantom import (
    DEFAULT_SHAPE,
    DEFAULT_SPACING,
    Phantom,
    case_seed,
    make_phantom,
)
from anunet_core.synthetic.tissues import TISSUES

__all__ = [
    "CT_IMAGE_STORAGE",
    "DEFAULT_SHAPE",
    "DEFAULT_SPACING",
    "HARD_KINDS",
    "MR_IMAGE_STORAGE",
    "Phantom",
    "TISSUES",
    "case_seed",
    "make_archive",
    "make_phantom",
    "make_qc_cohort",
    "trivial_predictor_dice",
    "write_chaos_mr",
    "write_dicom_archive",
    "write_dicom_series",
    "write_lits",
    "write_msd",
    "write_nifti_pairs",
    "write_png_gray",
]

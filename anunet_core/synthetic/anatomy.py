"""The anatomy of one phantom: a tissue-class map and a label map, drawn in body-centred mm.

An elliptical body with a subcutaneous fat ring and an abdominal wall with ribs, the lung
bases and the heart above a domed diaphragm, a spine with vertebral bodies, discs and
posterior elements, paraspinal and psoas muscles, aorta and inferior vena cava, bowel loops
(gas, fluid, enhancing wall, oral contrast) and vessels in mesenteric fat, the stomach with an
air-fluid level, the gallbladder, the pancreas, and the organs the ANU-Net paper segments:
liver (with vessels and 1-3 hypodense lesions), spleen and both kidneys (cortex, medulla,
sinus). Everything is drawn in millimetres (:class:`~anunet_core.synthetic.shapes.Grid`), so
a phantom of any shape and spacing shows the same anatomy, cropped by its field of view.
Position, size and shape vary per case: body and organ sizes by about +-15-20 % per axis, and
random low-frequency surface modes deform every organ.

Label values (TotalSegmentator's CT "total" class map,
:data:`anunet_core.vocabulary.TOTALSEG_LABELS`, used for both modalities)

    =====  =========================  ====================================
    value  structure                  notes
    =====  =========================  ====================================
    0      background                 everything not listed
    1      spleen                     CHAOS PNG code 252
    2      kidney_right               CHAOS PNG code 126 (includes sinus)
    3      kidney_left                CHAOS PNG code 189 (includes sinus)
    4      gallbladder
    5      liver                      CHAOS PNG code 63 (includes lesions)
    6      stomach
    7      pancreas
    11     lung_lower_lobe_left       lung bases above the diaphragm
    14     lung_lower_lobe_right
    26-43  vertebrae S1 ... T1        26 = S1, 27 = L5, 31 = L1, 32 = T12, 34 = T10
    51     heart
    52     aorta
    63     inferior_vena_cava
    =====  =========================  ====================================

    Discs, spinal canal, ribs, muscles, fat and bowel are unlabelled (0). The liver lesions
    are a separate boolean mask inside the liver (``Phantom.lesions``), written as label 2 by
    :func:`~anunet_core.synthetic.nifti.write_lits`.

:func:`draw_anatomy` draws the structures in a fixed order, one function each, all from one
random stream: the result depends on the seed only (later paint wins where they overlap).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from anunet_core.synthetic.shapes import (
    Blob,
    Box,
    Grid,
    Painter,
    box_shape,
    nonempty,
    rotation,
    smooth_noise,
    superellipse,
    surface_phase,
)
from anunet_core.synthetic.tissues import (
    T_ARTERY,
    T_BILE,
    T_BOWEL_CONTRAST,
    T_BOWEL_FLUID,
    T_BOWEL_GAS,
    T_BOWEL_WALL,
    T_CANCELLOUS,
    T_CORTEX,
    T_CORTICAL,
    T_CSF,
    T_DISC,
    T_FAT,
    T_HEART,
    T_LESION,
    T_LIVER,
    T_LIVER_VESSEL,
    T_LUNG,
    T_MEDULLA,
    T_MUSCLE,
    T_PANCREAS,
    T_RIB,
    T_SINUS,
    T_SPLEEN,
    T_STOMACH_FLUID,
    T_VEIN,
)
from anunet_core.vocabulary import TOTALSEG_LABELS

__all__ = ["draw_anatomy"]


@dataclass(frozen=True)
class _Canvas:
    """What every drawing step shares: the grid, the one random stream and the painter."""

    grid: Grid
    rng: np.random.Generator
    paint: Painter


@dataclass(frozen=True)
class _Body:
    """The trunk's cross-section (the same on every axial slice), in body-centred mm."""

    A: float  # nominal cavity semi-axis, lateral
    B: float  # nominal cavity semi-axis, anteroposterior
    y_back: float  # inner edge of the back fat at the midline
    theta: np.ndarray  # (I, J) angle around the body: 0 = patient's right, +pi/2 anterior
    fat_inner: np.ndarray  # (I, J) bool: inside the subcutaneous fat
    cavity: np.ndarray  # (I, J) bool: inside the muscle wall


@dataclass(frozen=True)
class _Spine:
    """Where the spine is (mm): drawn early to place other structures, painted late."""

    x: float  # centre of the vertebral bodies
    y: float
    rx: float  # vertebral body semi-axes
    ry: float
    r_aorta: float
    period: float  # height of one vertebral level
    z_disc0: float  # z of a disc centre
    disc_half: float  # half the disc height


def draw_anatomy(
    rng: np.random.Generator, grid: Grid
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one abdomen: ``(tissue uint8, labels uint8, lesions bool)``, all ``(I, J, K)``.

    All random draws come from ``rng`` in a fixed order, so the result depends on the seed only.
    """
    c = _Canvas(grid, rng, Painter(grid.shape))
    body = _body_wall(c)
    abdomen = _thorax(c, body)
    spine = _spine_geometry(c, body)
    _bowel(c, body, abdomen, spine)
    _muscles(c, body, spine)
    _stomach(c, body, abdomen)
    liver_right = _liver(c, body, abdomen, spine)
    _gallbladder(c, body, abdomen, liver_right.center[2])
    spleen_center = _spleen(c, body, abdomen)
    _pancreas(c, abdomen, spine, spleen_center)
    cavity = body.cavity[:, :, None]
    _kidneys(c, cavity, spine)
    _great_vessels(c, cavity, abdomen, spine)
    _vertebrae(c, body, spine)
    _ribs(c, body)
    _fat_plane(c.paint)
    lesions = _liver_lesions(c)
    return c.paint.tissue, c.paint.labels, lesions


def _body_wall(c: _Canvas) -> _Body:
    """Skin-fat ring, muscle wall and the cavity inside it (mesenteric / retroperitoneal fat;
    bowel and organs go in there)."""
    u = c.rng.uniform
    X2, Y2 = c.grid.X[:, :, 0], c.grid.Y[:, :, 0]  # (I, 1), (1, J)
    a, b = u(125, 160), u(92, 120)  # body semi-axes (lateral, AP), mm
    b_post = b * u(0.88, 0.96)  # flatter back
    p_body = u(2.0, 2.5)
    t_fat, fat_mod, fat_phase = u(8, 30), u(0.1, 0.35), u(-0.6, 0.6)
    wall = u(7, 13)
    b_y = np.where(Y2 >= 0, b, b_post)
    theta = np.arctan2(Y2 / b_y, X2 / a)  # 0 = patient's right, +pi/2 anterior
    t_eff = t_fat * (1 + fat_mod * np.sin(theta - fat_phase))
    body = superellipse(X2 / a, Y2 / b_y, p_body) < 1
    fat_inner = superellipse(X2 / (a - t_eff), Y2 / (b_y - t_eff), p_body) < 1
    cavity = superellipse(X2 / (a - t_eff - wall), Y2 / (b_y - t_eff - wall), p_body) < 1
    c.paint(body, T_FAT)
    c.paint(fat_inner, T_MUSCLE)
    c.paint(cavity, T_FAT)
    return _Body(A=a - t_fat - wall, B=b - t_fat - wall, y_back=-(b_post - t_fat),
                 theta=theta, fat_inner=fat_inner, cavity=cavity)


def _thorax(c: _Canvas, body: _Body) -> np.ndarray:
    """The diaphragm dome (per (x, y)), the lung bases and the heart above it.

    Returns the abdomen: bool ``(I, J, K)``, the cavity below the diaphragm.
    """
    u = c.rng.uniform
    X, Z = c.grid.X, c.grid.Z
    X2, Y2 = X[:, :, 0], c.grid.Y[:, :, 0]
    A, B = body.A, body.B
    z_apex_r = u(112, 132)
    z_apex_l = z_apex_r - u(8, 25)
    x_r, x_l, y_dome = A * u(0.3, 0.5), -A * u(0.3, 0.5), B * u(0.0, 0.25)
    cxx, cyy = u(60, 90), u(50, 80)
    dome_r = z_apex_r - cxx * ((X2 - x_r) / A) ** 2 - cyy * ((Y2 - y_dome) / B) ** 2
    dome_l = z_apex_l - cxx * ((X2 - x_l) / A) ** 2 - cyy * ((Y2 - y_dome) / B) ** 2
    dome = np.maximum(dome_r, dome_l)[:, :, None]  # (I, J, 1)
    cavity = body.cavity[:, :, None]
    thorax = cavity & (Z > dome + 3.0)
    abdomen = cavity & (Z < dome - 3.0)
    xh, yh, rhx, rhy = -u(10, 30), B * u(0.15, 0.35), u(55, 75), u(45, 60)
    heart2 = ((X2 - xh) / rhx) ** 2 + ((Y2 - yh) / rhy) ** 2 < 1
    heart = thorax & heart2[:, :, None]
    lung = thorax & ~heart
    c.paint(cavity & ~thorax & ~abdomen, T_MUSCLE)  # the diaphragm itself
    c.paint(lung & (X > 0), T_LUNG, TOTALSEG_LABELS["lung_lower_lobe_right"])
    c.paint(lung & (X <= 0), T_LUNG, TOTALSEG_LABELS["lung_lower_lobe_left"])
    c.paint(heart, T_HEART, TOTALSEG_LABELS["heart"])
    return abdomen


def _spine_geometry(c: _Canvas, body: _Body) -> _Spine:
    """Spine and aorta sizes (painted last, drawn now to place other structures)."""
    u = c.rng.uniform
    x_s, y_s = u(-3, 3), body.y_back + u(55, 65)
    rvx, rvy = u(19, 24), u(14, 18)
    r_a = u(9, 13)
    period, z_disc0, disc_half = u(33, 38), u(-6, 6), u(3.5, 5.0)
    return _Spine(x_s, y_s, rvx, rvy, r_a, period, z_disc0, disc_half)


def _bowel(c: _Canvas, body: _Body, abdomen: np.ndarray, spine: _Spine) -> None:
    """Bowel loops in the abdominal cavity outside the retroperitoneum, then the mesenteric
    vessels in the fat between them."""
    u, grid = c.rng.uniform, c.grid
    Y, Z = grid.Y, grid.Z
    X2, Y2 = grid.X[:, :, 0], Y[:, :, 0]
    loops = smooth_noise(c.rng, grid.shape, grid.spacing, 14.0)
    content = smooth_noise(c.rng, grid.shape, grid.spacing, 45.0)
    bowel_bias = u(-0.3, 0.3)
    # retroperitoneum (spine, kidneys, their fat): a flat ellipse around the spine
    retro = ((X2 - spine.x) / (0.8 * body.A)) ** 2 + ((Y2 - spine.y) / (spine.ry + u(22, 32))) ** 2 < 1
    bowel = (
        abdomen
        & ~retro[:, :, None]
        & (loops + 0.8 * (Y / body.B) - Z / 250.0 + bowel_bias > 0.1)
    )
    q = np.quantile(content[bowel], [0.10, 0.40, 0.85]) if bowel.any() else np.zeros(3)
    c.paint(bowel & (content < q[0]), T_BOWEL_GAS)
    c.paint(bowel & (content >= q[0]) & (content < q[1]), T_BOWEL_FLUID)
    c.paint(bowel & (content >= q[1]) & (content < q[2]), T_BOWEL_WALL)
    c.paint(bowel & (content >= q[2]), T_BOWEL_CONTRAST)
    # mesenteric vessels in the fat between the loops: curves where two fields cross zero
    g1 = smooth_noise(c.rng, grid.shape, grid.spacing, 35.0)
    g2 = smooth_noise(c.rng, grid.shape, grid.spacing, 35.0)
    width = np.float32(u(0.12, 0.2))
    mesenteric = (np.abs(g1) < width) & (np.abs(g2) < width)
    c.paint(mesenteric & abdomen & ~bowel & ~retro[:, :, None], T_VEIN)


def _muscles(c: _Canvas, body: _Body, spine: _Spine) -> None:
    """Paraspinal muscles (2D, all z) and psoas (grows inferiorly)."""
    u = c.rng.uniform
    X, Y, Z = c.grid.X, c.grid.Y, c.grid.Z
    X2, Y2 = X[:, :, 0], Y[:, :, 0]
    for side in (1, -1):
        cx, cy = spine.x + side * u(30, 36), body.y_back + u(20, 28)
        rx, ry = u(22, 28), u(18, 24)
        c.paint(body.fat_inner & (((X2 - cx) / rx) ** 2 + ((Y2 - cy) / ry) ** 2 < 1), T_MUSCLE)
    z_psoas, psoas_rate, psoas_max = u(-40, -10), u(0.15, 0.22), u(18, 25)
    r_ps = np.clip((z_psoas - Z) * psoas_rate, 0, psoas_max)  # (1, 1, K)
    for side in (1, -1):
        cx = spine.x + side * (spine.rx + 0.8 * r_ps)
        cy = spine.y + u(-3, 3)
        psoas = ((X - cx) ** 2 + (Y - cy) ** 2 < r_ps**2) & (r_ps > 0) & body.cavity[:, :, None]
        c.paint(psoas, T_MUSCLE)


def _stomach(c: _Canvas, body: _Body, abdomen: np.ndarray) -> None:
    """The stomach in the left upper quadrant, its air-fluid level anteriorly."""
    u = c.rng.uniform
    stomach = Blob(
        center=(-body.A * u(0.2, 0.4), body.B * u(0.05, 0.3), u(50, 80)),
        radii=(u(35, 55), u(25, 38), u(40, 60)),
        rotation=rotation(yaw=u(-0.5, 0.3), pitch=u(-0.3, 0.3)),
        modes=Blob.random_modes(c.rng, u(0.06, 0.12)),
    )
    gas_level = stomach.center[1] + stomach.radii[1] * u(0.1, 0.6)
    st = stomach.mask(c.grid) & abdomen
    st_inner = ndimage.binary_erosion(st, iterations=1)
    label = TOTALSEG_LABELS["stomach"]
    c.paint(st, T_BOWEL_WALL, label)
    c.paint(st_inner & (c.grid.Y > gas_level), T_BOWEL_GAS, label)
    c.paint(st_inner & (c.grid.Y <= gas_level), T_STOMACH_FLUID, label)


def _liver(c: _Canvas, body: _Body, abdomen: np.ndarray, spine: _Spine) -> Blob:
    """The liver: right lobe + left lobe, smooth union, deformed, with hepatic / portal veins.

    Returns the right lobe (the gallbladder hangs below it).
    """
    u = c.rng.uniform
    right = Blob(
        center=(body.A * u(0.4, 0.58), body.B * u(-0.18, 0.08), u(28, 62)),
        radii=(u(50, 75), u(65, 92), u(62, 92)),
        rotation=rotation(yaw=u(-0.2, 0.2), pitch=u(-0.15, 0.15)),
        power=u(2.0, 2.6),
    )
    left = Blob(
        center=(-body.A * u(0.0, 0.15), body.B * u(0.3, 0.5), right.center[2] + u(10, 30)),
        radii=(u(35, 62), u(22, 40), u(28, 48)),
        rotation=rotation(yaw=u(-0.3, 0.3), roll=u(-0.2, 0.2)),
    )
    modes = Blob.random_modes(c.rng, u(0.08, 0.14), n=8)
    lo = np.minimum(np.subtract(right.center, right.half_extent()),
                    np.subtract(left.center, left.half_extent()))
    hi = np.maximum(np.add(right.center, right.half_extent()),
                    np.add(left.center, left.half_extent()))
    lbox = c.grid.box((lo + hi) / 2, (hi - lo) / 2)
    liver = _liver_lobes(c.grid, right, left, modes, lbox)
    # the liver stops short of the aorta and the spine (retrocrural space)
    X2, Y2 = c.grid.X[:, :, 0], c.grid.Y[:, :, 0]
    prevertebral = (((X2 - spine.x) / (spine.rx + 14)) ** 2
                    + ((Y2 - spine.y) / (spine.ry + 2 * spine.r_aorta + 8)) ** 2 < 1)
    liver &= abdomen & ~prevertebral[:, :, None]
    c.paint(liver, T_LIVER, TOTALSEG_LABELS["liver"])
    _hepatic_vessels(c, liver, lbox)
    return right


def _liver_lobes(grid: Grid, right: Blob, left: Blob, modes: np.ndarray, lbox: Box) -> np.ndarray:
    """Bool ``(I, J, K)``: the smooth union (smooth-min width 0.12) of the two lobes, deformed
    by ``modes`` in the right lobe's local coordinates."""
    liver = np.zeros(grid.shape, dtype=bool)
    if nonempty(lbox):
        f_r, ux, uy, uz = right.field(grid, lbox)
        f_l = left.field(grid, lbox)[0]
        k = np.float32(0.12)  # smooth-min width
        f = -k * np.logaddexp(-f_r / k, -f_l / k)
        for kx, ky, kz, ph, amp in modes:
            f = f - np.float32(amp) * np.cos(surface_phase(ux, uy, uz, kx, ky, kz, ph))
        liver[lbox] = f < 1.0
    return liver


def _hepatic_vessels(c: _Canvas, liver: np.ndarray, lbox: Box) -> None:
    """Hepatic / portal veins: curves where two smooth fields both cross zero."""
    grid, u = c.grid, c.rng.uniform
    if nonempty(lbox):
        bshape = box_shape(lbox)
        g1 = smooth_noise(c.rng, bshape, grid.spacing, 40.0)
        g2 = smooth_noise(c.rng, bshape, grid.spacing, 40.0)
        width = np.float32(u(0.2, 0.3))
        vessels = np.zeros(grid.shape, dtype=bool)
        vessels[lbox] = (np.abs(g1) < width) & (np.abs(g2) < width)
        c.paint(vessels & liver, T_LIVER_VESSEL, TOTALSEG_LABELS["liver"])
    else:
        smooth_noise(c.rng, (2, 2, 2), grid.spacing, 40.0)  # keep the draw order fixed
        smooth_noise(c.rng, (2, 2, 2), grid.spacing, 40.0)
        u(0.2, 0.3)


def _gallbladder(c: _Canvas, body: _Body, abdomen: np.ndarray, liver_z: float) -> None:
    """The gallbladder under the liver (``liver_z``: the right lobe's centre, mm)."""
    u = c.rng.uniform
    gb = Blob(
        center=(body.A * u(0.05, 0.3), body.B * u(0.1, 0.35), liver_z - u(25, 45)),
        radii=(u(12, 18), u(12, 18), u(25, 40)),
        rotation=rotation(pitch=u(-0.5, 0.5), roll=u(-0.4, 0.4)),
        modes=Blob.random_modes(c.rng, 0.05, n=3),
    )
    c.paint(gb.mask(c.grid) & abdomen, T_BILE, TOTALSEG_LABELS["gallbladder"])


def _spleen(c: _Canvas, body: _Body, abdomen: np.ndarray) -> tuple[float, float, float]:
    """The spleen: a crescent against the left posterolateral wall. Returns its centre (mm)."""
    u = c.rng.uniform
    th = np.deg2rad(u(200, 235))
    r_thick = u(18, 26)
    inward = u(0, 8) + r_thick
    sx_, sy_ = np.cos(th), np.sin(th)
    spleen = Blob(
        center=(body.A * sx_ - inward * sx_, body.B * sy_ - inward * sy_, u(40, 70)),
        radii=(u(45, 58), r_thick, u(38, 55)),
        rotation=rotation(yaw=th + np.pi / 2, roll=u(-0.3, 0.3)),
        bend=u(0.2, 0.45),
        modes=Blob.random_modes(c.rng, u(0.05, 0.1)),
    )
    c.paint(spleen.mask(c.grid) & abdomen, T_SPLEEN, TOTALSEG_LABELS["spleen"])
    return spleen.center


def _pancreas(c: _Canvas, abdomen: np.ndarray, spine: _Spine, spleen_center) -> None:
    """The pancreas: a tapering tube from the head (right of the midline, anterior) across the
    aorta to the tail at the splenic hilum (a quadratic Bezier curve)."""
    u, grid = c.rng.uniform, c.grid
    x_s, y_s, rvy, r_a = spine.x, spine.y, spine.ry, spine.r_aorta
    head = np.array([x_s + u(25, 45), y_s + rvy + u(30, 45), u(-15, 10)])
    neck = np.array([x_s - u(0, 10), y_s + rvy + 2 * r_a + u(12, 22), head[2] + u(5, 15)])
    tail = np.array([spleen_center[0] + u(15, 30), spleen_center[1] + u(0, 15),
                     head[2] + u(15, 35)])
    r_head, r_tail = u(12, 16), u(7, 10)
    t = np.linspace(0.0, 1.0, 24)[:, None]
    curve = (1 - t) ** 2 * head + 2 * t * (1 - t) * neck + t**2 * tail  # (24, 3)
    radius = r_head + (r_tail - r_head) * t[:, 0]
    lo_p, hi_p = curve.min(axis=0) - r_head, curve.max(axis=0) + r_head
    pbox = grid.box((lo_p + hi_p) / 2, (hi_p - lo_p) / 2)
    if not nonempty(pbox):
        return
    px, py, pz = grid.X[pbox[0]], grid.Y[:, pbox[1]], grid.Z[:, :, pbox[2]]
    inside = np.zeros(box_shape(pbox), dtype=bool)
    for (cx, cy, cz), r in zip(curve, radius):
        inside |= (px - cx) ** 2 + (py - cy) ** 2 + (pz - cz) ** 2 < r * r
    pancreas = np.zeros(grid.shape, dtype=bool)
    pancreas[pbox] = inside
    c.paint(pancreas & abdomen, T_PANCREAS, TOTALSEG_LABELS["pancreas"])


def _kidneys(c: _Canvas, cavity: np.ndarray, spine: _Spine) -> None:
    """Both kidneys, either side of the spine, the left one higher."""
    u = c.rng.uniform
    z_right = u(-45, -20)
    for side, name in ((1, "kidney_right"), (-1, "kidney_left")):
        z_c = z_right if side == 1 else z_right + u(8, 25)
        kid = Blob(
            center=(spine.x + side * (spine.rx + u(28, 40)), spine.y + u(-6, 6), z_c),
            radii=(u(22, 28), u(19, 24), u(45, 58)),
            rotation=rotation(yaw=-side * np.deg2rad(u(20, 35)),
                              pitch=-side * np.deg2rad(u(8, 18))),
            modes=Blob.random_modes(c.rng, 0.05, n=4),
        )
        sinus_off = u(0.5, 0.6)
        _kidney(c, kid, side, sinus_off, cavity, TOTALSEG_LABELS[name])


def _kidney(c: _Canvas, kid: Blob, side: int, sinus_off: float, cavity: np.ndarray,
            label: int) -> None:
    """One kidney: cortex (the outer 6 mm), medulla and a sinus toward the spine (medial)."""
    grid = c.grid
    kbox = grid.box(kid.center, kid.half_extent())
    if not nonempty(kbox):
        return
    f, ux, uy, uz = kid.field(grid, kbox)
    inside = f < 1.0
    cortex_edge = 1.0 - 6.0 / float(np.mean(kid.radii))
    sinus = ((ux + side * sinus_off) / 0.5) ** 2 + (uy / 0.45) ** 2 + (uz / 0.6) ** 2 < 1
    tissue = np.where(f > cortex_edge, T_CORTEX, np.where(sinus, T_SINUS, T_MEDULLA))
    k_mask = np.zeros(grid.shape, dtype=bool)
    k_mask[kbox] = inside
    k_mask &= cavity
    k_tissue = np.zeros(grid.shape, dtype=np.uint8)
    k_tissue[kbox] = tissue.astype(np.uint8)
    for t in (T_CORTEX, T_MEDULLA, T_SINUS):
        c.paint(k_mask & (k_tissue == t), t, label)


def _great_vessels(c: _Canvas, cavity: np.ndarray, abdomen: np.ndarray, spine: _Spine) -> None:
    """The aorta (left of and in front of the spine, slightly oblique) and the IVC."""
    u = c.rng.uniform
    X, Y, Z = c.grid.X, c.grid.Y, c.grid.Z
    x_s, y_s, rvy, r_a = spine.x, spine.y, spine.ry, spine.r_aorta
    x_a = x_s - u(8, 16) + u(-0.03, 0.03) * Z
    y_a = y_s + rvy + r_a + u(1, 5)
    c.paint(((X - x_a) ** 2 + (Y - y_a) ** 2 < r_a**2) & cavity, T_ARTERY, TOTALSEG_LABELS["aorta"])
    vrx, vry = u(11, 15), u(8, 11)
    x_v, y_v = x_s + u(18, 28), y_s + rvy + u(6, 14)
    ivc = (((X - x_v) / vrx) ** 2 + ((Y - y_v) / vry) ** 2 < 1) & abdomen
    c.paint(ivc, T_VEIN, TOTALSEG_LABELS["inferior_vena_cava"])


def _vertebrae(c: _Canvas, body: _Body, spine: _Spine) -> None:
    """The spine: vertebral bodies (labelled by level), discs, canal, posterior elements."""
    Z = c.grid.Z
    X2, Y2 = c.grid.X[:, :, 0], c.grid.Y[:, :, 0]
    x_s, y_s, rvx, rvy = spine.x, spine.y, spine.rx, spine.ry
    rel = (Z - spine.z_disc0) / spine.period  # (1, 1, K)
    level = np.floor(rel).astype(int)
    in_disc = np.abs(rel - np.round(rel)) * spine.period < spine.disc_half
    vb = ((X2 - x_s) / rvx) ** 2 + ((Y2 - y_s) / rvy) ** 2 < 1
    vb_inner = ((X2 - x_s) / (rvx - 3)) ** 2 + ((Y2 - y_s) / (rvy - 3)) ** 2 < 1
    r_c = c.rng.uniform(7, 9)
    y_c = y_s - rvy - r_c - 1
    d_c = np.sqrt((X2 - x_s) ** 2 + (Y2 - y_c) ** 2)
    canal = d_c < r_c
    arch = (d_c < r_c + 5) & ~canal
    spinous = (np.abs(X2 - x_s) < 4) & (Y2 < y_c - r_c) & (Y2 > body.y_back + 6)
    transverse = (np.abs(Y2 - y_c - 2) < 4) & (np.abs(X2 - x_s) < rvx + 15) & ~canal & ~vb
    posterior = arch | spinous | transverse
    for lev in np.unique(level):
        value = int(np.clip(TOTALSEG_LABELS["vertebrae_L1"] + lev, TOTALSEG_LABELS["vertebrae_S1"],
                            TOTALSEG_LABELS["vertebrae_T1"]))
        zsel = (level == lev) & ~in_disc  # (1, 1, K)
        c.paint(vb[:, :, None] & zsel, T_CORTICAL, value)
        c.paint(vb_inner[:, :, None] & zsel, T_CANCELLOUS, value)
        c.paint(posterior[:, :, None] & zsel, T_CORTICAL, value)
    c.paint(vb[:, :, None] & in_disc, T_DISC)
    c.paint(canal, T_CSF)


def _ribs(c: _Canvas, body: _Body) -> None:
    """Ribs in the wall band of the upper abdomen, running down ~15 cm toward the front."""
    u, Z = c.rng.uniform, c.grid.Z
    band = body.fat_inner & ~body.cavity
    psi = np.abs(np.angle(np.exp(1j * (body.theta + np.pi / 2))))  # 0 posterior .. pi anterior
    rib_period, rib_width, rib_phase = u(24, 30), u(7, 10), u(0, 30)
    rib_drop, z_rib_min = u(120, 170), u(-30, -10)
    phase = np.mod(Z + rib_drop * psi[:, :, None] / np.pi - rib_phase, rib_period)
    ribs = (band & (psi > 0.35) & (psi < 2.5))[:, :, None] & (phase < rib_width) & (Z > z_rib_min)
    c.paint(ribs, T_RIB)


def _fat_plane(paint: Painter) -> None:
    """A fat plane (one voxel in-plane) between the solid organs and unlabelled bowel."""
    solid = ("liver", "spleen", "kidney_right", "kidney_left", "pancreas")
    organs = np.isin(paint.labels, [TOTALSEG_LABELS[n] for n in solid])
    in_plane = ndimage.generate_binary_structure(2, 1)[:, :, None]
    near = ndimage.binary_dilation(organs, structure=in_plane)
    bowel_like = np.isin(paint.tissue, [T_BOWEL_GAS, T_BOWEL_FLUID, T_BOWEL_WALL,
                                        T_BOWEL_CONTRAST])
    paint(near & ~organs & bowel_like & (paint.labels == 0), T_FAT)


def _liver_lesions(c: _Canvas) -> np.ndarray:
    """1-3 hypodense spheres (radius 6-16 mm), wholly inside the liver where it is deep enough.

    Paints them as tissue only (the label stays liver); returns them, bool ``(I, J, K)``.
    """
    grid, paint, u = c.grid, c.paint, c.rng.uniform
    lesions = np.zeros(grid.shape, dtype=bool)
    liver_now = paint.labels == TOTALSEG_LABELS["liver"]
    n_lesions = int(c.rng.integers(1, 4))
    radii = [u(6, 16) for _ in range(n_lesions)]
    picks = c.rng.random(n_lesions)
    if not liver_now.any():
        return lesions
    idx = np.argwhere(liver_now)
    lo_i, hi_i = idx.min(axis=0), idx.max(axis=0) + 1
    sub = tuple(slice(int(lo_), int(hi_)) for lo_, hi_ in zip(lo_i, hi_i))
    depth = ndimage.distance_transform_edt(
        np.pad(liver_now[sub], 1), sampling=grid.spacing)[1:-1, 1:-1, 1:-1]
    gx, gy, gz = (ax.ravel()[s] for ax, s in zip((grid.X, grid.Y, grid.Z), sub))
    for r, pick in zip(radii, picks):
        ok = np.argwhere(depth > r + 3.0)
        if len(ok) == 0:
            ok = np.argwhere(depth >= depth.max())
            r = max(float(depth.max()) - 1.0, 3.0)
        ci, cj, ck = ok[int(pick * len(ok))]
        sphere = ((gx[:, None, None] - gx[ci]) ** 2 + (gy[None, :, None] - gy[cj]) ** 2
                  + (gz[None, None, :] - gz[ck]) ** 2) < r * r
        lesions[sub] |= sphere
    lesions &= liver_now
    paint.tissue[lesions] = T_LESION
    return lesions

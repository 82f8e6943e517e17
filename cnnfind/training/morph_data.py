"""
Training data for the galaxy-morphology classifier.

Galaxies are the Galaxy Zoo 1 cutouts of ``../shared/data/gz1`` (class
0 elliptical; 1, 2, 3 spiral; 4 and 5 dropped), split by object into
train, validation and test sets. The no-galaxy class (stars, empty sky)
is cut from real frames of ``../shared/data/real`` exactly as
`~cnnfind.GalaxyMorphClassifier` frames field sources: the SDSS colour
JPEG of the NGC 6976 field and single-band FITS frames shown with the
same display stretch. Frames and regions are split so that test stamps
never come from a region seen in training; the M67 plate and the SEP
frame are test-only.
"""

import csv
from pathlib import Path

import numpy as np

from cnnfind.evaluation.peers import read_sextractor_catalog
from cnnfind.morphology._prepare import (
    DISPLAY,
    _central_crop,
    _resample,
    _stretch_linear,
)
from cnnfind.morphology._stamps import cut_stamp, display_grey, framed_side
from cnnfind.training.data import default_data_dir

__all__ = ['CLASSES', 'GZ1_CLASS_MAP', 'STORE_CROP', 'STORE_SIZE',
           'STAMP_SCALE', 'load_gz1', 'split_gz1', 'store_image',
           'no_galaxy_stamps']

#: Output classes, in the network's order.
CLASSES = ('elliptical', 'spiral', 'no_galaxy')

#: Galaxy Zoo 1 leaf class to our class index (4 "don't know" and 5
#: "merger" are not among the three classes).
GZ1_CLASS_MAP = {0: 0, 1: 1, 2: 1, 3: 1}

#: Training images are stored as the central ``STORE_CROP`` of a cutout
#: resampled to ``STORE_SIZE`` pixels, leaving room for scale and shift
#: augmentation around the network's central 0.5 crop.
STORE_CROP = 0.6
STORE_SIZE = 96

#: Side of a Galaxy Zoo cutout in units of the radius that field mode
#: frames with (`cnnfind.morphology._stamps.framed_side` on the display
#: image): the median over 1000 GZ1 cutouts is 5.83, measured with
#: ``python benchmarks/morph_field_framing.py --gz1 1000``.
STAMP_SCALE = 5.8

_JPEG = 'astropy-data/visualization_ngc6976.jpeg'
_SDSS_R_CAT = 'astropy-data_sdss_r.cat'
# The JPEG is the reprojected SDSS frame (496 x 682) enlarged 3x and
# flipped vertically.
_JPEG_SCALE = 3.0
_FITS_NY = 496

#: Single-band frames for the no-galaxy class: path -> catalogue, role.
_FITS_FRAMES = {
    'astropy-data/visualization_reprojected_sdss_r.fits.bz2':
        (_SDSS_R_CAT, 'split'),
    'astropy-data/visualization_reprojected_sdss_g.fits.bz2':
        ('astropy-data_sdss_g.cat', 'split'),
    'astropy-data/tutorials_FITS-images_HorseHead.fits':
        ('astropy-data_HorseHead_dss.cat', 'train'),
    'debian-eso-midas-testdata/ISAAC.2006-04-13T06_32_38.944.fits':
        ('eso-midas_ISAAC.cat', 'train'),
    'pypi-package-testdata/ccdproc_a8280271_saao1m_raw.fits':
        ('ccdproc_saao_raw.cat', 'train'),
    'pypi-package-testdata/astroquery_ukidss_wfcam_K_taurus.fits':
        ('astroquery_ukidss_K.cat', 'train'),
    'astropy-data/photometry_spitzer_example_image.fits':
        ('astropy-data_spitzer_glimpse_irac2.cat', 'train'),
    'debian-eso-midas-testdata/dss_test1.fits':
        ('eso-midas_dss_test1.cat', 'train'),
    'astropy-data/photometry_M6707HH.fits':
        ('astropy-data_M6707HH_M67_dss.cat', 'test'),
    'sep/image.fits': ('sep_image.cat', 'test'),
}


def _data_dir(data_dir):
    data_dir = default_data_dir() if data_dir is None else Path(data_dir)
    if data_dir is None or not (data_dir / 'gz1').is_dir():
        msg = ('the shared data folder (../shared/data with gz1/ and '
               'real/) was not found; set CNNFIND_DATA')
        raise FileNotFoundError(msg)
    return data_dir


def load_gz1(data_dir=None):
    """
    Object IDs, image paths and class indices of the GZ1 cutouts in the
    three classes.
    """
    root = _data_dir(data_dir) / 'gz1'
    ids, paths, labels = [], [], []
    with open(root / 'labels.csv') as f:
        for row in csv.DictReader(f):
            cls = int(row['CLASS'])
            if cls in GZ1_CLASS_MAP:
                ids.append(int(row['OBJID']))
                paths.append(root / 'images' / f'{row["OBJID"]}.jpeg')
                labels.append(GZ1_CLASS_MAP[cls])
    return np.array(ids), paths, np.array(labels)


def split_gz1(ids, *, seed=0, val=0.10, test=0.15):
    """
    Deterministic split by object: ``'train'``, ``'val'`` or ``'test'``
    for every object ID (duplicates of an ID share a split).
    """
    uniq = np.unique(ids)
    rng = np.random.default_rng(seed)
    u = rng.random(uniq.size)
    role = np.where(u < test, 'test', np.where(u < test + val, 'val', 'train'))
    lookup = dict(zip(uniq.tolist(), role.tolist(), strict=True))
    return np.array([lookup[i] for i in ids.tolist()])


def read_jpeg(path):
    """A JPEG as a ``(H, W, 3)`` uint8 array."""
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im.convert('RGB'))


def store_image(display):
    """
    A display-scaled ``(H, W, C)`` float image (NaN where invalid) as
    the stored ``(STORE_SIZE, STORE_SIZE, C)`` uint8 training image.
    """
    img = _central_crop(display, STORE_CROP)
    img = np.where(np.isfinite(img), img, np.float32(DISPLAY['sky']))
    img = _resample(img.astype(np.float32), STORE_SIZE)
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def _catalogue_stars(cat_path, *, min_snr=20.0, min_class_star=0.8):
    """0-based positions of the confident stars of a SExtractor table."""
    cat = read_sextractor_catalog(cat_path)
    ok = ((cat['CLASS_STAR'] >= min_class_star) & (cat['SNR_WIN'] >= min_snr)
          & (cat['FLAGS'] < 8))
    all_xy = np.column_stack([cat['X_IMAGE'] - 1.0, cat['Y_IMAGE'] - 1.0])
    return all_xy[ok], all_xy


def _sky_stamps(rng, shape, sources, n, region, min_dist):
    """
    Random empty-sky stamps ``(x, y, side)`` in ``region``: no catalogue
    source within ``min_dist`` or a fifth of the side of the centre (so
    that the network's central view holds no detected source).
    """
    from scipy.spatial import cKDTree
    tree = cKDTree(sources) if len(sources) else None
    out = []
    for _ in range(50 * n):
        if len(out) >= n:
            break
        side = np.exp(rng.uniform(np.log(24), np.log(300)))
        x = rng.uniform(0, shape[1] - 1)
        y = rng.uniform(0, shape[0] - 1)
        if not region(x, y):
            continue
        if (tree is not None
                and tree.query([x, y])[0] < max(min_dist, 0.2 * side)):
            continue
        out.append((x, y, side))
    return out


def _frame_stamps(display, stars, sources, region, rng, *, max_stars,
                  n_sky, min_dist, full):
    """
    No-galaxy stamps of one display-scaled frame: stars framed like
    Galaxy Zoo cutouts and empty-sky stamps of random size.

    Returns stored uint8 images, or the full display stamps when
    ``full`` is set (for end-to-end evaluation).
    """
    grey = display_grey(display)
    keep = np.array([region(x, y) for x, y in stars], bool).reshape(-1)
    stars = stars[keep] if len(stars) else stars
    if len(stars) > max_stars:
        stars = stars[rng.choice(len(stars), max_stars, replace=False)]
    out = []
    for x, y in stars:
        jitter = np.exp(rng.uniform(-0.25, 0.25))
        side = framed_side(grey, x, y, STAMP_SCALE, jitter)
        out.append(cut_stamp(display, x, y, side))
    for x, y, side in _sky_stamps(rng, grey.shape, sources, n_sky, region,
                                  min_dist):
        out.append(cut_stamp(display, x, y, side))
    return out if full else [store_image(s) for s in out]


def _read_fits(path):
    from astropy.io import fits
    with fits.open(path) as hdul:
        hdu = next(h for h in hdul if h.data is not None and h.data.ndim == 2)
        return hdu.data.astype(np.float32)


def no_galaxy_stamps(split, *, data_dir=None, seed=0, max_stars=250,
                     n_sky=120, full=False):
    """
    No-galaxy stamps (stars and empty sky) for one split.

    Parameters
    ----------
    split : {'train', 'val', 'test'}
        The NGC 6976 field (colour JPEG and its SDSS g, r frames) is cut
        into regions: left two thirds train, right third top validation,
        right third bottom test. Other frames belong to one split (the
        M67 plate and the SEP frame to the test set).
    full : bool
        Return full display stamps (for the end-to-end test) instead of
        stored training images.

    Returns
    -------
    stamps : list
        uint8 ``(STORE_SIZE, STORE_SIZE, C)`` images (C = 3 for the colour
        JPEG, 1 for FITS frames), or display float stamps when ``full``.
    """
    root = _data_dir(data_dir) / 'real'
    rng = np.random.default_rng([seed, ('train', 'val', 'test').index(split)])
    ref = root / 'sextractor-reference'
    out = []

    # The colour JPEG: positions from the SDSS r catalogue, mapped.
    fits_third = 682 * 2 / 3

    def fits_region(x, y):
        if split == 'train':
            return x < fits_third
        top = y >= _FITS_NY / 2  # FITS y up = JPEG top
        return x >= fits_third and (top if split == 'val' else not top)

    jpeg = read_jpeg(root / _JPEG).astype(np.float32) / 255.0
    stars, sources = _catalogue_stars(ref / _SDSS_R_CAT)

    def to_jpeg(xy):
        xy = np.asarray(xy, float).reshape(-1, 2)
        return np.column_stack([(xy[:, 0] + 0.5) * _JPEG_SCALE - 0.5,
                                (_FITS_NY - 0.5 - xy[:, 1]) * _JPEG_SCALE
                                - 0.5])

    def jpeg_region(x, y):
        return fits_region((x + 0.5) / _JPEG_SCALE - 0.5,
                           _FITS_NY - 0.5 - (y + 0.5) / _JPEG_SCALE)

    out += _frame_stamps(jpeg, to_jpeg(stars), to_jpeg(sources), jpeg_region,
                         rng, max_stars=max_stars, n_sky=n_sky,
                         min_dist=10 * _JPEG_SCALE, full=full)

    for rel, (cat, role) in _FITS_FRAMES.items():
        if role != 'split' and role != split:
            continue
        path = root / rel
        if not path.exists():
            continue
        data = _read_fits(path)
        display = _stretch_linear(data[..., None])
        stars, sources = _catalogue_stars(ref / cat)
        region = fits_region if role == 'split' else (lambda x, y: True)
        out += _frame_stamps(display, stars, sources, region, rng,
                             max_stars=max_stars, n_sky=n_sky // 2,
                             min_dist=10, full=full)
    return out

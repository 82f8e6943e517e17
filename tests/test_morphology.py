"""
GalaxyMorphClassifier: input modes, positions, masks, bad inputs and
accuracy on real Galaxy Zoo cutouts.
"""

import warnings

import astropy.units as u
import numpy as np
import pytest
from astropy.nddata import NDData
from astropy.table import QTable, Table
from astropy.utils.masked import Masked

from cnnfind import GalaxyMorphClassifier
from cnnfind.exceptions import CNNFindWarning
from cnnfind.morphology._prepare import _stretch_linear, display_stretch, prepare_cutouts
from cnnfind.morphology._stamps import (
    ROBUST_MARGIN,
    cut_stamp,
    display_grey,
    framed_side,
    petrosian_r90,
    segment_display,
)
from cnnfind.runtime.registry import ModelError
from cnnfind.training.data import default_data_dir

from .conftest import assert_sky_centroid, simple_wcs

PROB_COLS = ['p_elliptical', 'p_spiral', 'p_no_galaxy']
DATA = default_data_dir()


@pytest.fixture(scope='module')
def clf():
    return GalaxyMorphClassifier(device='cpu')


def _blob(shape, x, y, amp=5000.0, scale=6.0, q=0.7):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return amp * np.exp(-np.hypot(xx - x, (yy - y) / q) / scale)


@pytest.fixture(scope='module')
def field():
    rng = np.random.default_rng(1)
    img = rng.normal(100.0, 5.0, (300, 400))
    img += _blob(img.shape, 110.0, 160.0)
    img += _blob(img.shape, 300.0, 80.0, amp=3000.0, scale=4.0, q=0.5)
    return img, np.array([[110.0, 160.0], [300.0, 80.0], [250.0, 250.0]])


# --- output contract -------------------------------------------------------

def test_cutouts_single_band(clf):
    rng = np.random.default_rng(0)
    cut = rng.normal(0, 10, (3, 100, 120)) + _blob((100, 120), 59.5, 49.5)
    tbl = clf(cut)
    assert isinstance(tbl, QTable)
    assert tbl.colnames == ['id', *PROB_COLS, 'label', 'masked_fraction']
    assert list(tbl['id']) == [1, 2, 3]
    prob = np.column_stack([tbl[c] for c in PROB_COLS])
    np.testing.assert_allclose(prob.sum(axis=1), 1.0, atol=1e-5)
    assert set(tbl['label']) <= {'elliptical', 'spiral', 'no_galaxy'}
    best = np.array(['elliptical', 'spiral', 'no_galaxy'])[prob.argmax(1)]
    assert list(tbl['label']) == list(best)


def test_colour_uint8_and_display_float_agree(clf):
    rng = np.random.default_rng(2)
    disp = np.clip(display_stretch(_blob((90, 90), 44.5, 44.5, 500, 5.0)
                                   / 5.0 + rng.normal(0, 1, (90, 90))),
                   0, 1)
    rgb8 = np.rint(np.repeat(disp[None, ..., None], 3, -1) * 255)
    a = clf(rgb8.astype(np.uint8))
    b = GalaxyMorphClassifier(stretch='none', device='cpu')(rgb8 / 255.0)
    for c in PROB_COLS:
        np.testing.assert_allclose(a[c], b[c], atol=1e-5)


# --- integer data: display values or counts --------------------------------

def _counts_cutouts():
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[:128, :128] - 63.5
    disc = 3000 * np.exp(-np.hypot(xx, yy / 0.3) / 8)
    blob = 5000 * np.exp(-np.hypot(xx, yy / 0.8) / 6)
    cut = 1000 + rng.normal(0, 10, (3, 128, 128)) + [disc, blob, 0 * blob]
    return np.round(cut)


def _assert_same_table(a, b):
    assert list(a['label']) == list(b['label'])
    for c in PROB_COLS:
        np.testing.assert_allclose(a[c], b[c], atol=1e-5)


@pytest.mark.parametrize('dtype', [np.int16, np.int32, np.int64, np.uint16])
def test_integer_count_cutouts_are_linear(clf, dtype):
    # Integer counts (FITS BITPIX 16/32, unsigned raw frames) are
    # asinh-stretched like float data, not divided by the dtype's maximum
    # (which made them black and every cutout 'no_galaxy').
    cut = _counts_cutouts()
    ref = clf(cut)
    assert list(ref['label'][:2]) != ['no_galaxy', 'no_galaxy']
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        tbl = clf(cut.astype(dtype))
    _assert_same_table(tbl, ref)


def test_uint16_display_values_are_display(clf):
    # 16-bit PNG-like display values (a uint8 image times 257) are still
    # display values, as uint8 ones are.
    rng = np.random.default_rng(2)
    disp = np.clip(display_stretch(_blob((90, 90), 44.5, 44.5, 500, 5.0)
                                   / 5.0 + rng.normal(0, 1, (2, 90, 90))),
                   0, 1)
    rgb8 = np.rint(np.repeat(disp[..., None], 3, -1) * 255).astype(np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        a = clf(rgb8)
        b = clf(rgb8.astype(np.uint16) * 257)
    ref = GalaxyMorphClassifier(stretch='none', device='cpu')(rgb8 / 255.0)
    _assert_same_table(a, ref)
    _assert_same_table(b, ref)


def test_ambiguous_integers_warn(clf):
    cut = _counts_cutouts()
    # Signed integers within 0-255: 8-bit display values or low counts.
    low = np.clip(cut - 900, 0, 255).astype(np.int32)
    with pytest.warns(CNNFindWarning, match="signed integers within 0-255.*"
                      "linear data.*stretch='none'"):
        tbl = clf(low)
    _assert_same_table(tbl, GalaxyMorphClassifier(
        stretch='asinh', device='cpu')(low))
    # uint16 with a sky noise between a quarter and half a grey level of
    # an 8-bit display (~100 ADU).
    mid = np.round(cut * 10).astype(np.uint16)
    with pytest.warns(CNNFindWarning, match='uint16 integers whose sky noise'
                      ".*linear data.*stretch='asinh'"):
        tbl = clf(mid)
    _assert_same_table(tbl, GalaxyMorphClassifier(
        stretch='asinh', device='cpu')(mid))
    # An explicit stretch is silent.
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        GalaxyMorphClassifier(stretch='none', device='cpu')(mid)
        GalaxyMorphClassifier(stretch='asinh', device='cpu')(low)


@pytest.mark.parametrize('dtype', [np.int16, np.int32, np.uint16])
def test_integer_count_field_is_linear(clf, dtype):
    # The edge-on disc of docs/morphology.rst in a field of counts.
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:160, :160] - 79.5
    img = rng.normal(100, 5, (300, 300))
    img[70:230, 70:230] += 3000 * np.exp(-np.hypot(xx, yy / 0.3) / 8)
    img = np.round(img)
    xy = [[149.5, 149.5], [40.0, 250.0]]
    ref = clf(img, positions=xy)
    assert list(ref['label']) == ['spiral', 'no_galaxy']
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        tbl = clf(img.astype(dtype), positions=xy)
    _assert_same_table(tbl, ref)


def test_integer_field_ambiguous_warns(clf, field):
    img, xy = field
    low = np.clip(np.round(img) - 90, 0, 255).astype(np.int64)
    with pytest.warns(CNNFindWarning, match='image values are signed'):
        tbl = clf(low, positions=xy)
    _assert_same_table(tbl, GalaxyMorphClassifier(
        stretch='asinh', device='cpu')(low, positions=xy))


def test_empty_sky_is_no_galaxy(clf):
    rng = np.random.default_rng(3)
    tbl = clf(rng.normal(50.0, 3.0, (4, 64, 64)))
    assert list(tbl['label']) == ['no_galaxy'] * 4


def test_tta_is_rotation_invariant():
    # Display values (stretch='none'), so that no direction-dependent
    # noise estimate enters.
    rng = np.random.default_rng(8)
    cut = rng.normal(0.02, 0.01, (1, 96, 96))
    cut[0] += _blob((96, 96), 47.5, 47.5, 0.5, 4.0, q=0.4)
    clf = GalaxyMorphClassifier(tta=True, stretch='none', device='cpu')
    a = clf(cut)
    b = clf(np.rot90(cut, 1, axes=(1, 2)))
    c = clf(cut[:, :, ::-1])
    for col in PROB_COLS:
        np.testing.assert_allclose(a[col], b[col], atol=1e-5)
        np.testing.assert_allclose(a[col], c[col], atol=1e-5)
    np.testing.assert_allclose(sum(a[col] for col in PROB_COLS), 1, atol=1e-5)


def test_float_colour_cutouts(clf):
    rng = np.random.default_rng(4)
    cut = rng.normal(0, 1, (2, 80, 80, 3))
    cut[0] += _blob((80, 80), 39.5, 39.5, 400.0, 4.0)[..., None]
    tbl = clf(cut)
    assert len(tbl) == 2
    assert np.all(np.isfinite(tbl['p_spiral']))


# --- field mode ------------------------------------------------------------

@pytest.mark.parametrize('names', [('x_centroid', 'y_centroid'),
                                   ('xcentroid', 'ycentroid'),
                                   ('x', 'y')])
def test_positions_table_names(clf, field, names):
    img, xy = field
    ref = clf(img, positions=xy)
    tbl = Table({names[0]: xy[:, 0], names[1]: xy[:, 1]})
    res = clf(img, positions=tbl)
    assert list(res.colnames[:3]) == ['id', 'x_centroid', 'y_centroid']
    np.testing.assert_allclose(res['x_centroid'], xy[:, 0])
    for c in PROB_COLS:
        np.testing.assert_allclose(res[c], ref[c])
    assert res['stamp_size'].unit == u.pix


def test_field_classifies_blob_and_sky(clf, field):
    img, xy = field
    tbl = clf(img, positions=xy)
    # The empty position is no galaxy.
    assert tbl['label'][2] == 'no_galaxy'
    assert tbl['p_no_galaxy'][2] > 0.9
    # Stamps are framed on each source's size.
    assert tbl['stamp_size'][0] > tbl['stamp_size'][2]


def test_field_without_positions_detects(clf, field):
    img, _ = field
    tbl = clf(img)
    assert 2 <= len(tbl) <= 4
    d = np.hypot(tbl['x_centroid'] - 110.0, tbl['y_centroid'] - 160.0)
    assert d.min() < 2.0


def test_field_nothing_detected(clf):
    from photutils.utils.exceptions import NoDetectionsWarning
    img = np.random.default_rng(5).normal(0, 1, (100, 100))
    with pytest.warns(NoDetectionsWarning):
        assert clf(img) is None


def test_quantity_and_nddata(clf, field):
    img, xy = field
    ref = clf(img, positions=xy)
    q = clf(img * u.electron, positions=xy)
    nd = clf(NDData(img), positions=xy)
    for c in PROB_COLS:
        np.testing.assert_allclose(q[c], ref[c])
        np.testing.assert_allclose(nd[c], ref[c])
    assert 'sky_centroid' not in nd.colnames
    wcs = simple_wcs(img.shape)
    assert_sky_centroid(clf(NDData(img, wcs=wcs), positions=xy), wcs)


def test_edge_source_is_padded(clf, field):
    img, _ = field
    # Empty sky: 16-pixel stamp, 8-pixel view of which 2 columns are
    # beyond the edge.
    tbl = clf(img, positions=[[2.0, 250.0]])
    assert tbl['masked_fraction'][0] == pytest.approx(0.25)
    assert np.isfinite(tbl['p_spiral'][0])


def test_masked_source(clf, field):
    img, xy = field
    mask = np.zeros(img.shape, bool)
    mask[120:200, 70:150] = True
    with pytest.warns(CNNFindWarning, match='masked'):
        tbl = clf(img, mask=mask, positions=xy)
    assert tbl['label'][0] == 'masked'
    assert np.isnan(tbl['p_elliptical'][0])
    # The other sources keep their labels (their probabilities move
    # only through the image-wide sky and noise estimates).
    ref = clf(img, positions=xy[1:])
    assert list(tbl['label'][1:]) == list(ref['label'])
    np.testing.assert_allclose(tbl['p_no_galaxy'][1:], ref['p_no_galaxy'],
                               atol=0.05)
    # NaN pixels act as a mask; NDData masks are honoured.
    nan_img = img.copy()
    nan_img[mask] = np.nan
    with pytest.warns(CNNFindWarning):
        t2 = clf(nan_img, positions=xy)
    with pytest.warns(CNNFindWarning):
        t3 = clf(NDData(img, mask=mask), positions=xy)
    np.testing.assert_allclose(t2['p_spiral'][1:], tbl['p_spiral'][1:])
    np.testing.assert_allclose(t3['p_spiral'][1:], tbl['p_spiral'][1:])


def test_partly_nan_cutout_is_filled(clf):
    rng = np.random.default_rng(6)
    cut = rng.normal(0, 1, (1, 64, 64))
    cut[0, :, :24] = np.nan
    tbl = clf(cut)
    # 8 of the 32 columns of the central crop.
    assert tbl['masked_fraction'][0] == pytest.approx(0.25)
    assert np.isfinite(tbl['p_spiral'][0])


def _disc_mask(shape, x, y, radius):
    yy, xx = np.mgrid[:shape[-2], :shape[-1]]
    return np.broadcast_to(np.hypot(xx - x, yy - y) < radius, shape)


def test_masked_array_cutouts(clf):
    # The mask of a masked array of cutouts marks invalid pixels, like
    # NaN (it used to be refused as a field-image mask).
    rng = np.random.default_rng(8)
    cut = rng.normal(0, 10, (2, 64, 64)) + _blob((64, 64), 31.5, 31.5)
    mask = np.zeros(cut.shape, bool)
    mask[:, :, :24] = True  # 8 of the 32 columns of the central crop
    nan = np.where(mask, np.nan, cut)
    ref = clf(nan)
    np.testing.assert_allclose(ref['masked_fraction'], 0.25)
    for data in (np.ma.MaskedArray(cut, mask), Masked(cut, mask=mask),
                 NDData(cut, mask=mask)):
        tbl = clf(data)
        np.testing.assert_allclose(tbl['masked_fraction'], 0.25)
        for col in PROB_COLS:
            np.testing.assert_allclose(tbl[col], ref[col], rtol=1e-6)
    # Integer counts: the masked values (here a huge bad value) are left
    # out of the stretch's sky and noise, as NaN would be.
    counts = np.round(cut + 1000).astype(np.int32)
    bad = np.where(mask, 2**30, counts)
    tbl = clf(np.ma.MaskedArray(bad, mask))
    ref = clf(np.where(mask, np.nan, counts.astype(float)))
    np.testing.assert_allclose(tbl['masked_fraction'], 0.25)
    for col in PROB_COLS:
        np.testing.assert_allclose(tbl[col], ref[col], rtol=1e-5, atol=1e-7)


def test_masked_array_colour_cutouts(clf):
    rng = np.random.default_rng(9)
    grey = np.clip(rng.normal(10, 3, (2, 64, 64))
                   + _blob((64, 64), 31.5, 31.5, amp=230.0), 0, 255)
    rgb = np.repeat(grey[..., None], 3, axis=-1).astype(np.uint8)
    mask = np.zeros(rgb.shape, bool)
    mask[:, :, :24, 1] = True  # one band masked: the pixel is invalid
    tbl = clf(np.ma.MaskedArray(rgb, mask))
    np.testing.assert_allclose(tbl['masked_fraction'], 0.25)
    # A per-pixel NDData mask of colour cutouts covers every band.
    tbl2 = clf(NDData(rgb, mask=mask[..., 1]))
    every_band = np.repeat(mask[..., 1:2], 3, axis=-1)
    tbl3 = clf(np.ma.MaskedArray(rgb, every_band))
    np.testing.assert_allclose(tbl2['masked_fraction'], 0.25)
    for col in PROB_COLS:
        np.testing.assert_allclose(tbl2[col], tbl3[col], rtol=1e-6)
    # Nothing masked: the same as the plain array.
    plain = clf(rgb)
    unmasked = clf(np.ma.MaskedArray(rgb, np.zeros(rgb.shape, bool)))
    for col in PROB_COLS:
        np.testing.assert_allclose(unmasked[col], plain[col])
    with pytest.raises(ValueError, match='no finite, unmasked pixels'):
        clf(np.ma.MaskedArray(rgb, np.ones(rgb.shape, bool)))


def test_masked_array_colour_field(clf, field):
    img, xy = field
    rgb = np.repeat(img[..., None], 3, axis=-1)
    mask = np.zeros(rgb.shape, bool)
    mask[120:200, 70:150, 0] = True  # covers source 0, in one band
    with pytest.warns(CNNFindWarning, match='masked'):
        tbl = clf(np.ma.MaskedArray(rgb, mask), positions=xy)
    with pytest.warns(CNNFindWarning, match='masked'):
        ref = clf(rgb, mask=mask[..., 0], positions=xy)
    assert tbl['label'][0] == 'masked'
    np.testing.assert_allclose(tbl['masked_fraction'], ref['masked_fraction'])
    np.testing.assert_allclose(tbl['p_spiral'][1:], ref['p_spiral'][1:])


def test_hollow_core_warns(clf):
    # NaN at the galaxy's centre changes what the network sees far more
    # than the same number of NaN pixels elsewhere in its view.
    rng = np.random.default_rng(10)
    cut = rng.normal(0, 10, (3, 64, 64)) + _blob((64, 64), 31.5, 31.5)
    # The view is the central 32x32, its core the disc of radius 4 px.
    cut[0][_disc_mask((64, 64), 31.5, 31.5, 3.0)] = np.nan
    cut[1][_disc_mask((64, 64), 41.5, 31.5, 3.0)] = np.nan  # off the core
    with pytest.warns(CNNFindWarning,
                      match=r'^1 source\(s\) have more than 10% of the core'):
        tbl = clf(cut)
    assert tbl['masked_fraction'][0] == pytest.approx(tbl['masked_fraction'][1])
    assert tbl['masked_fraction'][0] < 0.05
    assert np.isfinite(tbl['p_spiral']).all()  # probabilities are kept
    with warnings.catch_warnings():
        warnings.simplefilter('error', CNNFindWarning)
        clf(cut[1:])
    # The same through a masked array, and in field mode.
    mask = np.zeros(cut.shape, bool)
    mask[0] = _disc_mask((64, 64), 31.5, 31.5, 3.0)
    with pytest.warns(CNNFindWarning, match='1 source.*core'):
        clf(np.ma.MaskedArray(np.nan_to_num(cut), mask))


def test_hollow_core_warns_in_field_mode(clf, field):
    img, xy = field
    # Near the centre, not on it (a mask on the centre: see
    # test_masked_core_keeps_field_framing).
    mask = _disc_mask(img.shape, xy[0, 0] + 3, xy[0, 1], 4.0).copy()
    with pytest.warns(CNNFindWarning, match='1 source.*core') as record:
        tbl = clf(img, mask=mask, positions=xy)
    assert not any('set to NaN' in str(w.message) for w in record)
    assert np.isfinite(tbl['p_spiral']).all()


def _core_mask(shape, x, y, kind):
    """A bad-pixel mask on the pixel at ``(x, y)``: a square of 1, 3x3,
    5x5 or 7x7 pixels, or a bad column 1 or 3 pixels wide through it."""
    ix, iy = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
    mask = np.zeros(shape, bool)
    if kind.startswith('column'):
        h = int(kind[len('column'):]) // 2
        mask[:, ix - h:ix + h + 1] = True
    else:
        h = int(kind[0]) // 2
        mask[iy - h:iy + h + 1, ix - h:ix + h + 1] = True
    return mask


@pytest.mark.parametrize('kind', ['1', '3x3', '5x5', '7x7', 'column1',
                                  'column3'])
def test_masked_core_keeps_field_framing(clf, field, kind):
    # A masked or NaN core (a saturated nucleus masked by a data-quality
    # map, a bad column through it) used to make the profile start at
    # zero, which the Petrosian ratio read as the galaxy's edge: the
    # stamp shrank from 160 to 16-17 pixels (3x3 and larger, 3-pixel
    # column) and the network saw only the hole. The invalid pixels are
    # now counted at the galaxy's radial profile.
    img, xy = field
    ref = clf(img, positions=xy)
    mask = _core_mask(img.shape, *xy[0], kind)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter('always', CNNFindWarning)
        tbl = clf(img, mask=mask, positions=xy)
        # NaN pixels act as the mask does.
        nan = clf(np.where(mask, np.nan, img), positions=xy)
    assert not any('set to NaN' in str(w.message) for w in record)
    side = tbl['stamp_size'][0].value
    assert abs(side / ref['stamp_size'][0].value - 1) < 0.03
    assert nan['stamp_size'][0].value == side
    # Framed right, the mask is a small part of the view (the core
    # warning comes from 7x7 pixels, 16 % of the view's core, and the
    # 3-pixel column on).
    assert tbl['masked_fraction'][0] < 0.05
    assert np.isfinite(tbl['p_spiral'][0])
    # The other sources (away from the mask) keep their stamps.
    assert list(tbl['stamp_size'][1:]) == list(ref['stamp_size'][1:])


def test_masked_core_keeps_label(clf):
    # The edge-on disc of docs/morphology.rst with a masked 5x5 core: its
    # 182-pixel stamp used to shrink to 17 pixels, labelled no_galaxy
    # (p = 0.98); it is now framed as without the mask and stays spiral.
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:160, :160] - 79.5
    img = rng.normal(100, 5, (300, 300))
    img[70:230, 70:230] += 3000 * np.exp(-np.hypot(xx, yy / 0.3) / 8)
    xy = [[149.5, 149.5], [40.0, 250.0]]
    ref = clf(img, positions=xy)
    tbl = clf(img, mask=_core_mask(img.shape, 149.5, 149.5, '5x5'),
              positions=xy)
    assert list(tbl['stamp_size']) == list(ref['stamp_size'])
    assert list(tbl['label']) == ['spiral', 'no_galaxy']
    assert tbl['p_spiral'][0] > 0.7


@pytest.mark.parametrize(('scale', 'q'), [(2.0, 0.8), (4.0, 0.5),
                                          (10.0, 0.6)])
def test_masked_core_petrosian_r90(scale, q):
    # Galaxies of different sizes with a NaN core: the radius (plain and
    # neighbour-masked, as framed_side measures them) within 3 % of the
    # radius without the NaN pixels (it was 2 to 3 pixels: the default,
    # or the first empty annulus taken for the edge).
    rng = np.random.default_rng(11)
    img = _blob((301, 301), 150.3, 149.6, 3000.0, scale, q)
    img += rng.normal(0.0, 5.0, img.shape)
    grey = display_grey(_stretch_linear(img[..., None]))
    r_ref = petrosian_r90(grey, 150.3, 149.6)
    side_ref = framed_side(grey, 150.3, 149.6, 5.8,
                           segments=segment_display(grey))
    for kind in ('3x3', '5x5', 'column3'):
        bad = np.where(_core_mask(grey.shape, 150.3, 149.6, kind),
                       np.nan, grey)
        r90 = petrosian_r90(bad, 150.3, 149.6)
        assert abs(r90 / r_ref - 1) < 0.03, kind
        side = framed_side(bad, 150.3, 149.6, 5.8,
                           segments=segment_display(bad))
        assert abs(side / side_ref - 1) < 0.03, kind


def test_segment_display_keeps_masked_core():
    # NaN pixels inside a source (its core, a column through it) stay in
    # its segment: the position on them is the source's, not the sky,
    # and a bad column does not cut it in two.
    _, grey, c = _crowded(0, (40, 220))
    ref = segment_display(grey)
    own = ref.own_label(c, c)
    n_ref = len(ref.slices)
    for kind in ('7x7', 'column1', 'column3'):
        bad = np.where(_core_mask(grey.shape, c, c, kind), np.nan, grey)
        seg = segment_display(bad)
        assert len(seg.slices) == n_ref, kind
        assert seg.own_label(c, c) == own, kind
        assert (abs(seg.extent(own, c, c) / ref.extent(own, c, c) - 1)
                < 0.15), kind


def test_masked_core_detected_field(clf, field):
    # A 2D field without positions: the source found on a galaxy with a
    # masked core gets the same framing as without the mask.
    img, xy = field
    mask = _core_mask(img.shape, *xy[0], '5x5')
    ref = clf(img)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', CNNFindWarning)
        tbl = clf(img, mask=mask)
    i = np.argmin(np.hypot(ref['x_centroid'] - xy[0, 0],
                           ref['y_centroid'] - xy[0, 1]))
    j = np.argmin(np.hypot(tbl['x_centroid'] - xy[0, 0],
                           tbl['y_centroid'] - xy[0, 1]))
    assert abs(tbl['stamp_size'][j] / ref['stamp_size'][i] - 1) < 0.03


@pytest.mark.skipif(DATA is None or not (DATA / 'real').is_dir(),
                    reason='shared real images not available')
def test_masked_core_on_sdss_galaxies(clf):
    # The four largest galaxies of the SDSS r frame of NGC 6976 (stamps
    # of 165 to 357 pixels): a masked 5x5 core or a 3-pixel bad column
    # through it leaves their stamps within 3 % (they were 17 pixels).
    from astropy.io import fits

    from cnnfind.evaluation.peers import read_sextractor_catalog
    real = DATA / 'real'
    sdss = fits.getdata(
        real / 'astropy-data/visualization_reprojected_sdss_r.fits.bz2')
    cat = read_sextractor_catalog(
        real / 'sextractor-reference/astropy-data_sdss_r.cat')
    gal = np.nonzero(cat['CLASS_STAR'] < 0.5)[0]
    keep = gal[np.argsort(cat['FLUX_AUTO'][gal])[::-1][:4]]
    xy = np.column_stack([cat['X_IMAGE'][keep] - 1, cat['Y_IMAGE'][keep] - 1])
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', CNNFindWarning)
        ref = clf(sdss, positions=xy)['stamp_size'].value
        assert ref.min() > 100
        for kind in ('5x5', 'column3'):
            mask = np.zeros(sdss.shape, bool)
            for x, y in xy:
                mask |= _core_mask(sdss.shape, x, y, kind)
            side = clf(sdss, mask=mask, positions=xy)['stamp_size'].value
            np.testing.assert_allclose(side, ref, rtol=0.03, err_msg=kind)


def _gz1_test_cutouts(n):
    """
    The first ``n`` elliptical and ``n`` spiral cutouts of the held-out
    Galaxy Zoo test split (uint8, ``(2n, H, W, 3)``) and their labels
    (0 elliptical, 1 spiral).
    """
    from cnnfind.training.morph_data import load_gz1, read_jpeg, split_gz1
    ids, paths, labels = load_gz1(DATA)
    test = np.nonzero(split_gz1(ids, seed=0) == 'test')[0]
    pick = np.concatenate([test[labels[test] == 0][:n],
                           test[labels[test] == 1][:n]])
    cut = np.stack([read_jpeg(paths[i]) for i in pick])
    return cut, np.minimum(labels[pick], 1)


@pytest.mark.skipif(DATA is None or not (DATA / 'gz1').is_dir(),
                    reason='shared Galaxy Zoo data not available')
def test_hollow_core_on_gz1(clf):
    # Real cutouts with a NaN disc at the centre (36 % of the core) are
    # warned about; the same disc away from the core is not, and leaves
    # the confident labels as they are.
    cut, _ = _gz1_test_cutouts(10)
    cut = cut / 255.0
    side = cut.shape[1]
    view = side * clf._crop
    c = (side - 1) / 2
    disp = GalaxyMorphClassifier(device='cpu', stretch='none')
    ref = disp(cut)
    centre = cut.copy()
    centre[:, _disc_mask((side, side), c, c, 0.075 * view)] = np.nan
    with pytest.warns(CNNFindWarning, match=f'^{len(cut)} source'):
        disp(centre)
    away = cut.copy()
    away[:, _disc_mask((side, side), c + 0.35 * view, c, 0.075 * view)] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter('error', CNNFindWarning)
        tbl = disp(away)
    prob = np.column_stack([ref[col] for col in PROB_COLS])
    confident = prob.max(axis=1) >= 0.9
    assert confident.sum() >= 10
    assert list(tbl['label'][confident]) == list(ref['label'][confident])


# --- bad input -------------------------------------------------------------

@pytest.mark.parametrize(('data', 'match'), [
    (np.zeros((0, 32, 32)), 'empty'),
    (np.zeros((2, 32, 32, 4)), 'stack'),
    (np.zeros((2, 2, 32, 32, 3)), 'stack'),
    (np.zeros((3, 4, 4)), 'at least 8x8'),
    (np.full((2, 32, 32), np.nan), 'no finite pixels'),
    (np.ones((2, 32, 32)), 'constant'),
])
def test_bad_cutouts(clf, data, match):
    with pytest.raises(ValueError, match=match):
        clf(data)


def test_bad_field_inputs(clf, field):
    img, xy = field
    with pytest.raises(ValueError, match='mask has shape'):
        clf(img, mask=np.zeros((10, 10), bool), positions=xy)
    with pytest.raises(ValueError, match='outside'):
        clf(img, positions=[[1000.0, 5.0]])
    with pytest.raises(ValueError, match='no position columns'):
        clf(img, positions=Table({'ra': [1.0], 'dec': [2.0]}))
    with pytest.raises(ValueError, match=r'\(N, 2\)'):
        clf(img, positions=np.zeros((3, 3)))
    with pytest.raises(ValueError, match='no valid'):
        clf(np.full((50, 50), np.nan), positions=[[10.0, 10.0]])
    with pytest.raises(ValueError, match='field image must be'):
        clf(np.zeros((10, 50, 50)), positions=[[10.0, 10.0]])
    with pytest.raises(ValueError, match='only used with a field'):
        clf(np.zeros((2, 32, 32)), mask=np.zeros((2, 32, 32), bool))
    with pytest.raises(TypeError, match='numeric'):
        clf(np.array(['a'] * 64).reshape(1, 8, 8))


def test_bad_arguments():
    with pytest.raises(ModelError, match='unknown model'):
        GalaxyMorphClassifier('no-such-model')
    with pytest.raises(ModelError, match='does not exist'):
        GalaxyMorphClassifier('/nonexistent/model.onnx')
    with pytest.raises(ValueError, match='stretch'):
        GalaxyMorphClassifier(stretch='log')
    with pytest.raises(ValueError, match='max_masked_fraction'):
        GalaxyMorphClassifier(max_masked_fraction=2)


# --- helpers ---------------------------------------------------------------

def test_petrosian_r90_of_exponential_disc():
    # Exponential profile: Petrosian radius (eta = 0.2) ~ 2.16 h and
    # 2 R_P contains ~ 0.99 of the light; R90 of that ~ 3.8 h.
    img = _blob((401, 401), 200.0, 200.0, amp=1.0, scale=10.0, q=1.0)
    r90 = petrosian_r90(img, 200.0, 200.0)
    assert 36 < r90 < 40
    # Empty sky gives the default.
    assert petrosian_r90(np.zeros((50, 50)), 25, 25) == 2.0


def _crowded(n_stars, r_range, seed=3):
    """
    Linear image of an exponential galaxy (R90 ~ 30 px on the display)
    with ``n_stars`` bright stars at ``r_range`` pixels from it, and its
    display grey image.
    """
    rng = np.random.default_rng(seed)
    shape, c = (501, 501), 250.0
    img = _blob(shape, c, c, amp=300.0, scale=7.0, q=0.8)
    img += rng.normal(0.0, 1.0, shape)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    r = rng.uniform(*r_range, n_stars)
    a = rng.uniform(0, 2 * np.pi, n_stars)
    for sx, sy, amp in zip(c + r * np.cos(a), c + r * np.sin(a),
                           rng.uniform(500, 5000, n_stars), strict=True):
        img += amp * np.exp(-((xx - sx)**2 + (yy - sy)**2) / 6.48)
    return img, display_grey(_stretch_linear(img[..., None])), c


def test_neighbour_masked_r90_on_crowded_field():
    _, iso, c = _crowded(0, (40, 220))
    _, crowded, _ = _crowded(40, (40, 220))
    r_iso = petrosian_r90(iso, c, c)
    # The stars in the annuli inflate the plain radius...
    r_plain = petrosian_r90(crowded, c, c)
    assert r_plain > 1.5 * r_iso
    # ... but not the one measured with the other sources left out.
    seg = segment_display(crowded)
    r_masked = petrosian_r90(crowded, c, c, segments=seg)
    assert abs(r_masked / r_iso - 1) < 0.2
    # framed_side uses it only when clearly smaller than the plain one,
    side = framed_side(crowded, c, c, 1.0, segments=seg)
    expect = r_masked if r_masked < ROBUST_MARGIN * r_plain else r_plain
    assert side == expect
    # without segments it is the plain radius (as in the training data),
    assert framed_side(crowded, c, c, 1.0) == r_plain
    # and an isolated galaxy keeps its plain (calibrated) radius.
    assert framed_side(iso, c, c, 1.0, segments=segment_display(iso)) == r_iso


def test_segment_display():
    assert segment_display(np.zeros((40, 40))) is None
    _, grey, c = _crowded(0, (40, 220))
    seg = segment_display(grey)
    own = seg.own_label(c, c)
    assert own > 0 and seg.own_label(5, 5) == 0
    assert 20 < seg.extent(own, c, c) < 100


@pytest.mark.parametrize('seed', [1, 2, 3])
def test_field_mode_crowded_stamp_size(clf, seed):
    # Stars close to the galaxy inflate the plain radius about 3x; field
    # mode cuts the stamp at least in half (but not always back to the
    # isolated size: blended stars are only partly removed).
    img, grey, c = _crowded(30, (30, 120), seed=seed)
    plain = framed_side(grey, c, c, clf._stamp_scale)
    iso = framed_side(_crowded(0, (30, 120), seed=seed)[1], c, c,
                      clf._stamp_scale)
    assert plain > 2.5 * iso
    side = clf(img, positions=[[c, c]])['stamp_size'][0].value
    assert side < 0.5 * plain
    assert side < 1.8 * iso


def test_cutout_mode_does_not_frame(clf, monkeypatch):
    # Cutouts are used as given: no radius or segmentation is measured.
    import cnnfind.morphology.classifier as mod

    def boom(*args, **kwargs):
        raise AssertionError('framing called in cutout mode')

    monkeypatch.setattr(mod, 'framed_side', boom)
    monkeypatch.setattr(mod, 'segment_display', boom)
    rng = np.random.default_rng(0)
    tbl = clf(rng.normal(0, 10, (2, 64, 64)) + _blob((64, 64), 31.5, 31.5))
    assert len(tbl) == 2


def test_cut_stamp_pads_with_nan():
    img = np.arange(100.0).reshape(10, 10)[..., None]
    st = cut_stamp(img, 0.0, 0.0, 8)
    assert st.shape == (8, 8, 1)
    assert np.isnan(st[0, 0, 0])
    assert st[4, 4, 0] == img[0, 0, 0]


def test_prepare_masked_fraction_counts_the_centre():
    cut = np.random.default_rng(7).normal(0, 1, (1, 64, 64))
    cut[0, 28:36, 28:36] = np.nan
    cut[0, :4] = np.nan  # outside the central crop
    _, masked = prepare_cutouts(cut, crop=0.5, size=32)
    # 64 NaN pixels in the 32x32 central crop.
    assert masked[0] == pytest.approx(64 / 1024)


# --- accuracy on real cutouts ----------------------------------------------

@pytest.mark.skipif(DATA is None or not (DATA / 'gz1').is_dir(),
                    reason='shared Galaxy Zoo data not available')
def test_accuracy_on_held_out_gz1(clf):
    cut, truth = _gz1_test_cutouts(40)
    tbl = clf(cut)
    pred = np.where(tbl['p_elliptical'] >= tbl['p_spiral'], 0, 1)
    # Measured 0.90 on this subset with the shipped model (0.90 on the
    # whole test split); the margin covers 80-object sampling noise.
    assert np.mean(pred == truth) >= 0.82
    assert np.mean(tbl['label'] != 'no_galaxy') >= 0.95


@pytest.mark.skipif(DATA is None or not (DATA / 'gz1').is_dir(),
                    reason='shared Galaxy Zoo data not available')
def test_field_mode_frames_galaxies_like_cutouts(clf):
    # A Galaxy Zoo cutout used as a field: the classifier measures the
    # galaxy's size and cuts its own stamp, which must agree with the
    # cutout's framing.
    from cnnfind.training.morph_data import load_gz1, read_jpeg, split_gz1
    ids, paths, labels = load_gz1(DATA)
    test = np.nonzero(split_gz1(ids, seed=0) == 'test')[0][:24]
    field_labels, cut_labels = [], []
    for i in test:
        rgb = read_jpeg(paths[i])
        centre = [(rgb.shape[1] - 1) / 2, (rgb.shape[0] - 1) / 2]
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', CNNFindWarning)
            field_labels.append(str(clf(rgb, positions=[centre])['label'][0]))
        cut_labels.append(str(clf(rgb[None])['label'][0]))
    field_labels = np.array(field_labels)
    assert np.mean(field_labels != 'no_galaxy') >= 0.9
    assert np.mean(field_labels == np.array(cut_labels)) >= 0.75


def _m67_bright_stars():
    """The M67 plate (native int16) and the 0-based positions of its
    bright, point-like SExtractor sources."""
    from astropy.io import fits

    from cnnfind.evaluation.peers import read_sextractor_catalog
    real = DATA / 'real'
    img = fits.getdata(real / 'astropy-data/photometry_M6707HH.fits')
    cat = read_sextractor_catalog(
        real / 'sextractor-reference/astropy-data_M6707HH_M67_dss.cat')
    ok = (cat['CLASS_STAR'] > 0.9) & (cat['SNR_WIN'] > 30)
    return img, np.column_stack([cat['X_IMAGE'][ok] - 1,
                                 cat['Y_IMAGE'][ok] - 1])


@pytest.mark.skipif(DATA is None or not (DATA / 'real').is_dir(),
                    reason='shared real images not available')
def test_m67_stars_are_no_galaxy(clf):
    img, xy = _m67_bright_stars()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', CNNFindWarning)
        tbl = clf(img.astype(float), positions=xy[:60])
    assert np.mean(tbl['label'] == 'no_galaxy') >= 0.85


@pytest.mark.skipif(DATA is None or not (DATA / 'real').is_dir(),
                    reason='shared real images not available')
def test_real_integer_frames_match_float(clf):
    # Native int16 DSS plate (M67) and the SDSS r frame as int32 counts:
    # the same classes as the float data.
    from astropy.io import fits

    from cnnfind.evaluation.peers import read_sextractor_catalog
    real = DATA / 'real'
    img, xy = _m67_bright_stars()
    assert img.dtype.kind == 'i'
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', CNNFindWarning)
        _assert_same_table(clf(img, positions=xy[:20]),
                           clf(img.astype(float), positions=xy[:20]))

    sdss = fits.getdata(
        real / 'astropy-data/visualization_reprojected_sdss_r.fits.bz2')
    cat = read_sextractor_catalog(
        real / 'sextractor-reference/astropy-data_sdss_r.cat')
    keep = np.argsort(cat['FLUX_AUTO'])[::-1][:40]
    xy = np.column_stack([cat['X_IMAGE'][keep] - 1, cat['Y_IMAGE'][keep] - 1])
    counts = np.round(sdss * 1000 + 1000)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', CNNFindWarning)
        ref = clf(counts, positions=xy)
        tbl = clf(counts.astype(np.int32), positions=xy)
    _assert_same_table(tbl, ref)
    # 1 elliptical, 4 spiral, 35 no_galaxy with the shipped model.
    assert np.sum(tbl['label'] != 'no_galaxy') >= 3


# --- non-square cutouts and colour fields ----------------------------------

def test_non_square_cutout_keeps_its_aspect_ratio(clf):
    """
    A non-square cutout used to be resampled to a square, which
    stretched the galaxy along one axis (GZ1 cutouts trimmed from 423 to
    212 columns: accuracy 0.95 to 0.62 on 40 of them). It is now framed
    by its longer side, so trimming columns outside the network's view
    changes nothing.
    """
    rng = np.random.default_rng(8)
    square = rng.normal(0, 5, (2, 160, 160))
    square[0] += _blob((160, 160), 79.5, 79.5, amp=3000.0, scale=8.0, q=0.3)
    square[1] += _blob((160, 160), 79.5, 79.5, amp=3000.0, scale=5.0, q=0.9)
    # Display values (uint8), so that no per-cutout stretch depends on
    # the pixels trimmed.
    square = np.clip(10 + 240 * np.arcsinh(square / 50) / 5, 0,
                     255).astype(np.uint8)
    full = clf(square)
    for trimmed in (square[:, :, 38:-38], square[:, 30:-30, :]):
        tbl = clf(trimmed)
        assert np.all(tbl['masked_fraction'] == 0)
        for col in PROB_COLS:
            np.testing.assert_allclose(tbl[col], full[col], atol=1e-5)
    # A cutout narrower than the view: the missing part counts as masked.
    tbl = clf(square[:, :, 60:-60])
    np.testing.assert_allclose(tbl['masked_fraction'], 0.5)


def test_colour_field_without_positions_is_refused(clf):
    img = np.zeros((64, 80, 3), np.uint8)
    with pytest.raises(ValueError, match='colour field image'):
        clf(img)

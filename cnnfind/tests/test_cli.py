# Licensed under a 3-clause BSD style license - see LICENSE.rst
"""
Tests of the ``cnnfind`` command-line interface.

Two kinds of test live here:

* tests of the CLI plumbing (argument handling, FITS reading, ECSV/DS9/PNG
  writing, batch error handling). They swap the network for a stand-in
  finder built on photutils' DAOStarFinder (``fake_finder`` fixture), so they
  check the CLI's own code without depending on a trained model;
* end-to-end tests with the real `cnnfind.CNNStarFinder` and the bundled
  model (``real_finder`` fixture), run on the SkyView M13 frame that ships
  with astropy.
"""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import QTable, Table
from astropy.wcs import WCS

from cnnfind import cli

M13 = cli.find_m13()

COLUMNS = ['id', 'x_centroid', 'y_centroid', 'sharpness', 'roundness1',
           'roundness2', 'n_pixels', 'peak', 'flux', 'mag', 'daofind_mag',
           'probability']


class FakeFinder:
    """Stand-in with the CNNStarFinder call signature (uses DAOStarFinder)."""

    calls = []

    def __init__(self, threshold, fwhm, *, min_probability=None, model=None,
                 device='auto', progress=False, n_threads=None):
        from photutils.detection import DAOStarFinder

        self.kwargs = dict(threshold=threshold, fwhm=fwhm,
                           min_probability=min_probability, model=model,
                           device=device, progress=progress)
        FakeFinder.calls.append(self.kwargs)
        self._finder = DAOStarFinder(threshold=threshold, fwhm=fwhm)

    def __call__(self, data, mask=None):
        tbl = self._finder(data, mask=mask)
        if tbl is None:
            return None
        tbl = QTable(tbl)
        tbl['probability'] = np.linspace(0.5, 1.0, len(tbl))
        return tbl


@pytest.fixture
def fake_finder(monkeypatch):
    FakeFinder.calls = []
    monkeypatch.setattr(cli, '_get_finder_class', lambda: FakeFinder)
    return FakeFinder


@pytest.fixture
def real_finder():
    import cnnfind

    if not hasattr(cnnfind, 'CNNStarFinder'):  # pragma: no cover
        pytest.skip('cnnfind.CNNStarFinder is not available yet')
    return cnnfind.CNNStarFinder


@pytest.fixture(scope='module')
def m13_data():
    with fits.open(M13) as hdul:
        return hdul[0].data.astype(float), hdul[0].header.copy()


@pytest.fixture
def mef(tmp_path, m13_data):
    """A multi-extension file: empty primary, SCI image and a DQ mask."""
    data, header = m13_data
    mask = np.zeros(data.shape, dtype=np.int16)
    mask[:50, :50] = 1
    hdul = fits.HDUList([fits.PrimaryHDU(),
                         fits.ImageHDU(data, header=header, name='SCI'),
                         fits.ImageHDU(mask, name='DQ')])
    path = tmp_path / 'field.fits'
    hdul.writeto(path)
    return path


def _read_regions(path):
    lines = path.read_text().splitlines()
    assert lines[0].startswith('# Region file format: DS9')
    assert 'image' in lines
    return [line for line in lines if line.startswith('circle(')]


# ---------------------------------------------------------------------------
# Plumbing (no network involved)
# ---------------------------------------------------------------------------

def test_help(capsys):
    assert cli.main(['--help']) == 0
    out = capsys.readouterr().out
    for command in ('demo', 'find', 'denoise', 'psfstars', 'morph', 'train'):
        assert command in out


@pytest.mark.parametrize('command', ['demo', 'find', 'denoise', 'psfstars',
                                     'morph', 'train'])
def test_subcommand_help(command, capsys):
    assert cli.main([command, '--help']) == 0
    assert 'usage: cnnfind ' + command in capsys.readouterr().out


def test_no_command_is_usage_error(capsys):
    assert cli.main([]) == 2
    assert 'usage' in capsys.readouterr().err


def test_bad_usage(tmp_path, capsys):
    assert cli.main(['find', 'x.fits']) == 2  # -o is required
    assert cli.main(['find', 'x.fits', '-o', str(tmp_path), '--fwhm', '-1']) == 2
    assert cli.main(['find', 'x.fits', '-o', str(tmp_path), '--fwhm', 'big']) == 2
    assert cli.main(['find', 'x.fits', '-o', str(tmp_path),
                     '--device', 'tpu']) == 2
    assert cli.main(['find', 'x.fits', '-o', str(tmp_path),
                     '--min-probability', '1.5']) == 2
    capsys.readouterr()
    assert cli.main(['find', 'x.fits', '-o', str(tmp_path),
                     '--model', str(tmp_path / 'missing.onnx')]) == 2
    assert 'missing.onnx: no such file' in capsys.readouterr().err


def test_interrupt_exit_status(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, '_cmd_find', interrupted)
    assert cli.main(['find', 'x.fits', '-o', 'out']) == 130
    assert 'cnnfind find: interrupted' in capsys.readouterr().err


def test_module_entry_point():
    result = subprocess.run([sys.executable, '-m', 'cnnfind', '--help'],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert 'usage: cnnfind' in result.stdout


def test_output_stems():
    assert cli._output_stem('a/b/img.fits') == 'img'
    assert cli._output_stem('img.fits.gz') == 'img'
    assert cli._output_stem('IMG.FIT') == 'IMG'
    assert cli._output_stem('frame.v2.fits.fz') == 'frame.v2'
    assert cli._unique_stems(['a/x.fits', 'b/x.fits', 'x.fit']) == ['x', 'x-2', 'x-3']


def test_parse_ext():
    assert cli._parse_ext(None) is None
    assert cli._parse_ext('1') == 1
    assert cli._parse_ext('SCI') == 'SCI'
    assert cli._parse_ext('SCI,2') == ('SCI', 2)


def test_bad_files_do_not_stop_batch(tmp_path, fake_finder, capsys):
    text = tmp_path / 'notes.fits'
    text.write_text('this is not a FITS file\n')
    table_only = tmp_path / 'table.fits'
    fits.HDUList([fits.PrimaryHDU(),
                  fits.BinTableHDU(Table({'a': [1, 2]}))]).writeto(table_only)
    missing = tmp_path / 'missing.fits'
    good = tmp_path / 'good.fits'
    fits.writeto(good, fits.getdata(M13).astype(float), fits.getheader(M13))
    outdir = tmp_path / 'out'

    status = cli.main(['find', str(text), str(missing), str(good), str(table_only),
                       '-o', str(outdir)])
    captured = capsys.readouterr()
    assert status == 1
    assert 'Summary: 1 of 4 images processed' in captured.out
    assert '3 failed' in captured.out
    err = captured.err
    assert 'Failed images:' in err
    assert f'{missing}: no such file' in err
    assert f'{text}: cannot be read as FITS' in err
    assert f'{table_only}: no HDU with 2-D image data' in err
    # the good file in the middle was still processed
    assert (outdir / 'good.ecsv').is_file()
    assert not (outdir / 'notes.ecsv').exists()


def test_missing_extension_message(mef, tmp_path, fake_finder, capsys):
    status = cli.main(['find', str(mef), '-o', str(tmp_path / 'o'), '--ext', 'NOPE'])
    assert status == 1
    err = capsys.readouterr().err
    assert "no extension 'NOPE'" in err
    assert '1:SCI' in err and '2:DQ' in err  # the available HDUs are listed
    status = cli.main(['find', str(mef), '-o', str(tmp_path / 'o'), '--ext', '7'])
    assert status == 1
    assert 'no extension 7' in capsys.readouterr().err
    status = cli.main(['find', str(mef), '-o', str(tmp_path / 'o'),
                       '--mask-ext', 'BPM'])
    assert status == 1
    assert "no extension 'BPM' for the mask" in capsys.readouterr().err


def test_find_outputs(mef, tmp_path, fake_finder, capsys):
    outdir = tmp_path / 'out'
    status = cli.main(['find', str(mef), '-o', str(outdir), '--ext', 'SCI',
                       '--mask-ext', 'DQ', '--regions', '--png',
                       '--fwhm', '3.5', '--threshold-sigma', '6',
                       '--min-probability', '0.4', '--device', 'cpu'])
    out = capsys.readouterr().out
    assert status == 0, out
    assert 'Summary: 1 of 1 images processed' in out

    kwargs = fake_finder.calls[-1]
    assert kwargs['fwhm'] == 3.5
    assert kwargs['min_probability'] == 0.4
    assert kwargs['device'] == 'cpu'
    assert kwargs['model'] is None

    tbl = QTable.read(outdir / 'field.ecsv')
    assert len(tbl) > 10
    for name in COLUMNS + ['sky_centroid', 'ra', 'dec']:
        assert name in tbl.colnames
    assert tbl.meta['extension'] == 'SCI'
    assert tbl.meta['threshold'] == pytest.approx(6 * tbl.meta['background_std'])
    # threshold handed to the finder is K times the background noise
    assert kwargs['threshold'] == pytest.approx(tbl.meta['threshold'])
    # the masked corner has no detections
    assert not np.any((tbl['x_centroid'] < 45) & (tbl['y_centroid'] < 45))

    # sky coordinates agree with the header WCS
    wcs = WCS(fits.getheader(mef, 'SCI'))
    sky = wcs.pixel_to_world(tbl['x_centroid'], tbl['y_centroid'])
    assert np.allclose(tbl['ra'].to_value('deg'), sky.ra.deg)
    assert np.allclose(tbl['dec'].to_value('deg'), sky.dec.deg)
    assert np.allclose(tbl['sky_centroid'].ra.deg, sky.ra.deg)

    circles = _read_regions(outdir / 'field.reg')
    assert len(circles) == len(tbl)
    first = circles[0]
    x, y, r = (float(v) for v in first[len('circle('):first.index(')')].split(','))
    assert x == pytest.approx(tbl['x_centroid'][0] + 1, abs=1e-3)  # 1-based
    assert y == pytest.approx(tbl['y_centroid'][0] + 1, abs=1e-3)
    assert r == pytest.approx(1.5 * 3.5)

    png = outdir / 'field.png'
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_mask_file(tmp_path, fake_finder, m13_data, capsys):
    data, header = m13_data
    fits.writeto(tmp_path / 'img.fits', data, header)
    mask = np.zeros(data.shape, np.uint8)
    mask[:60, :60] = 1
    fits.writeto(tmp_path / 'bpm.fits', mask)
    # a mask file for every image
    assert cli.main(['find', str(tmp_path / 'img.fits'), '-o',
                     str(tmp_path / 'a'), '--mask-file',
                     str(tmp_path / 'bpm.fits')]) == 0
    tbl = QTable.read(tmp_path / 'a' / 'img.ecsv')
    assert len(tbl) > 10
    assert not np.any((tbl['x_centroid'] < 55) & (tbl['y_centroid'] < 55))
    # a directory of <stem>.fits masks, the mask in a named extension
    masks = tmp_path / 'masks'
    masks.mkdir()
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(mask, name='BPM')]).writeto(
        masks / 'img.fits')
    image, got, _, _ = cli.read_image(str(tmp_path / 'img.fits'),
                                      mask_ext='BPM',
                                      mask_file=str(masks / 'img.fits'))
    assert got is not None and got.sum() == mask.sum()
    assert cli.main(['denoise', str(tmp_path / 'img.fits'), '-o',
                     str(tmp_path / 'den'), '--mask-file', str(masks),
                     '--mask-ext', 'BPM', '--device', 'cpu']) == 0
    den = fits.getdata(tmp_path / 'den' / 'img_denoised.fits')
    assert np.isnan(den[:60, :60]).all() and np.isfinite(den[60:, 60:]).all()
    # wrong shape, missing mask of one image, missing option target
    fits.writeto(tmp_path / 'small.fits', np.zeros((10, 10)))
    assert cli.main(['find', str(tmp_path / 'img.fits'), '-o',
                     str(tmp_path / 'b'), '--mask-file',
                     str(tmp_path / 'small.fits')]) == 1
    assert f'mask {tmp_path / "small.fits"} has shape (10, 10)' in \
        capsys.readouterr().err
    fits.writeto(tmp_path / 'other.fits', data, header)
    assert cli.main(['find', str(tmp_path / 'other.fits'), '-o',
                     str(tmp_path / 'b'), '--mask-file', str(masks)]) == 1
    assert 'masks/other.fits: no such file' in capsys.readouterr().err
    assert cli.main(['find', str(tmp_path / 'img.fits'), '-o',
                     str(tmp_path / 'b'), '--mask-file',
                     str(tmp_path / 'nothing.fits')]) == 2
    assert '--mask-file' in capsys.readouterr().err


def test_find_no_detections_writes_empty_table(tmp_path, fake_finder, capsys):
    rng = np.random.default_rng(0)
    path = tmp_path / 'noise.fits'
    fits.writeto(path, rng.normal(0, 1, (64, 64)))
    outdir = tmp_path / 'out'
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # no NoDetectionsWarning leaks out
        status = cli.main(['find', str(path), '-o', str(outdir),
                           '--threshold-sigma', '50', '--regions'])
    assert status == 0
    tbl = QTable.read(outdir / 'noise.ecsv')
    assert len(tbl) == 0
    assert tbl.colnames == COLUMNS  # no celestial WCS -> no sky columns
    assert _read_regions(outdir / 'noise.reg') == []
    assert '0 sources' in capsys.readouterr().out


def test_nonfinite_pixels_are_masked(tmp_path, fake_finder, m13_data):
    data, header = m13_data
    data = data.copy()
    data[100:120, 100:120] = np.nan
    path = tmp_path / 'nan.fits'
    fits.writeto(path, data, header)
    image, mask, _, _ = cli.read_image(str(path))
    assert mask is not None and mask[110, 110] and mask.sum() == 400
    assert cli.main(['find', str(path), '-o', str(tmp_path / 'o')]) == 0


def test_background_noise_ignores_nebulosity():
    """The noise ``--threshold-sigma`` scales is the pixel noise: a smooth
    nebula that triples the clipped standard deviation of the pixels
    leaves it within 5 % of the true noise."""
    from astropy.stats import sigma_clipped_stats

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:256, :256]
    nebula = 30.0 * (np.sin(xx / 17.0) * np.cos(yy / 23.0) + 1.0)
    data = 100.0 + nebula + rng.normal(0.0, 5.0, (256, 256))
    median, std = cli.background_level(data)
    assert std == pytest.approx(5.0, rel=0.05)
    assert sigma_clipped_stats(data, sigma=3.0)[2] > 3 * 5.0
    assert abs(median - np.median(data)) < 5.0
    mask = np.zeros(data.shape, bool)
    mask[:, :128] = True
    data[:, :128] = 1e6  # masked pixels do not count
    assert cli.background_level(data, mask)[1] == pytest.approx(5.0,
                                                                rel=0.05)


def test_all_masked_image(tmp_path, fake_finder, capsys):
    path = tmp_path / 'nan.fits'
    fits.writeto(path, np.full((32, 32), np.nan))
    assert cli.main(['find', str(path), '-o', str(tmp_path / 'o')]) == 1
    assert 'every pixel is masked' in capsys.readouterr().err


def test_duplicate_stems(tmp_path, fake_finder, m13_data):
    data, header = m13_data
    for sub in ('a', 'b'):
        (tmp_path / sub).mkdir()
        fits.writeto(tmp_path / sub / 'img.fits', data, header)
    outdir = tmp_path / 'out'
    assert cli.main(['find', str(tmp_path / 'a' / 'img.fits'),
                     str(tmp_path / 'b' / 'img.fits'), '-o', str(outdir)]) == 0
    assert (outdir / 'img.ecsv').is_file()
    assert (outdir / 'img-2.ecsv').is_file()


def test_demo_plumbing(tmp_path, fake_finder, capsys):
    outdir = tmp_path / 'demo'
    assert cli.main(['demo', '-o', str(outdir)]) == 0
    out = capsys.readouterr().out
    assert 'Found ' in out and 'stars' in out
    assert (outdir / 'm13.ecsv').is_file()
    assert (outdir / 'm13.png').is_file()


def test_demo_missing_image(tmp_path, monkeypatch, capsys):
    def missing():
        raise cli.CLIError('the demo image is not part of this astropy')

    monkeypatch.setattr(cli, 'find_m13', missing)
    assert cli.main(['demo', '-o', str(tmp_path)]) == 1
    assert 'not part of this astropy' in capsys.readouterr().err


def test_train_without_torch(monkeypatch, capsys):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec',
                        lambda name, *a: None if name == 'torch'
                        else real_find_spec(name, *a))
    assert cli.main(['train', 'starfinder', '--epochs', '1']) == 2
    assert 'cnnfind[train]' in capsys.readouterr().err


def test_train_passes_arguments(monkeypatch):
    pytest.importorskip('torch')
    from cnnfind.training import starfinder

    seen = []
    monkeypatch.setattr(starfinder, 'main', lambda argv=None: seen.append(argv))
    assert cli.main(['train', 'starfinder', '--epochs', '3', '--out', 'x']) == 0
    assert seen == [['--epochs', '3', '--out', 'x']]


@pytest.mark.parametrize(('kind', 'result', 'status'), [
    ('starfinder', 'cnnfind/models/starfinder.json', 0),  # a card path
    ('morphology', 0, 0),
    ('psfstars', 3, 3),
])
def test_train_dispatch_and_status(monkeypatch, kind, result, status):
    pytest.importorskip('torch')
    import importlib
    module = importlib.import_module(f'cnnfind.training.{kind}')
    seen = []

    def fake_main(argv=None):
        seen.append(argv)
        return result

    monkeypatch.setattr(module, 'main', fake_main)
    assert cli.main(['train', kind, '--seed', '1']) == status
    assert seen == [['--seed', '1']]


def test_save_overlay(tmp_path, m13_data):
    pytest.importorskip('matplotlib')
    from cnnfind._plotting import _save_overlay

    data, _ = m13_data
    tbl = QTable({'x_centroid': [10.0, 20.0, np.nan], 'y_centroid': [5.0, 7.0, 1.0]})
    path = _save_overlay(data, tbl, tmp_path / 'o.png', title='t')
    assert os.path.getsize(path) > 1000
    _save_overlay(data, None, tmp_path / 'empty.png')
    assert (tmp_path / 'empty.png').is_file()


# ---------------------------------------------------------------------------
# End to end with the real CNNStarFinder
# ---------------------------------------------------------------------------

def test_demo(tmp_path, real_finder, capsys):
    outdir = tmp_path / 'cnnfind-demo'
    assert cli.main(['demo', '-o', str(outdir)]) == 0
    out = capsys.readouterr().out
    tbl = QTable.read(outdir / 'm13.ecsv')
    assert f'Found {len(tbl)} stars.' in out
    assert str(outdir / 'm13.png') in out
    assert (outdir / 'm13.png').read_bytes()[:4] == b'\x89PNG'
    for name in COLUMNS + ['sky_centroid', 'ra', 'dec']:
        assert name in tbl.colnames
    # M13 is a globular cluster: there are plenty of stars in the frame
    assert len(tbl) >= 20
    assert np.all((tbl['probability'] >= 0) & (tbl['probability'] <= 1))
    ny, nx = fits.getdata(M13).shape
    assert np.all((tbl['x_centroid'] > -1) & (tbl['x_centroid'] < nx))
    assert np.all((tbl['y_centroid'] > -1) & (tbl['y_centroid'] < ny))


def test_find_real(mef, tmp_path, real_finder):
    outdir = tmp_path / 'out'
    assert cli.main(['find', str(mef), '-o', str(outdir), '--ext', 'SCI',
                     '--regions', '--device', 'cpu']) == 0
    tbl = QTable.read(outdir / 'field.ecsv')
    assert len(tbl) > 0
    assert len(_read_regions(outdir / 'field.reg')) == len(tbl)


# ---------------------------------------------------------------------------
# cnnfind denoise / cnnfind train n2v
# ---------------------------------------------------------------------------

def _noisy_fits(path, seed=0, shape=(64, 80)):
    rng = np.random.default_rng(seed)
    data = rng.normal(200.0, 5.0, shape).astype(np.float32)
    data[30, 40] += 300.0
    hdr = fits.Header({'OBJECT': 'noise'})
    fits.PrimaryHDU(data, header=hdr).writeto(path)
    return data


def test_denoise_writes_fits(tmp_path, capsys):
    data = _noisy_fits(tmp_path / 'a.fits')
    out = tmp_path / 'out' / 'a_clean.fits'
    assert cli.main(['denoise', str(tmp_path / 'a.fits'), '-o', str(out),
                     '--residual', '--device', 'cpu']) == 0
    with fits.open(out) as hdul:
        den = hdul[0].data
        assert hdul[0].header['OBJECT'] == 'noise'
        assert 'N2VDenoiser' in str(hdul[0].header['HISTORY'])
    assert den.shape == data.shape and den.dtype.kind == 'f'
    assert np.std(den[:20]) < 0.6 * np.std(data[:20])
    resid = fits.getdata(tmp_path / 'out' / 'a_clean_residual.fits')
    np.testing.assert_allclose(resid, data - den, atol=1e-3)
    assert 'Summary: 1 of 1 images denoised' in capsys.readouterr().out


def test_find_warns_on_denoised_image(tmp_path, capsys):
    # `cnnfind find` on the output of `cnnfind denoise` says to use the
    # raw image (the HISTORY mark); on the raw image it does not.
    _noisy_fits(tmp_path / 'a.fits')
    out = tmp_path / 'a_clean.fits'
    assert cli.main(['denoise', str(tmp_path / 'a.fits'), '-o', str(out),
                     '--device', 'cpu']) == 0
    capsys.readouterr()
    assert cli.main(['find', str(out), '-o', str(tmp_path / 'cat'),
                     '--device', 'cpu']) == 0
    err = capsys.readouterr().err
    assert 'CNNFindWarning' in err and 'run it on the raw image' in err
    assert cli.main(['find', str(tmp_path / 'a.fits'), '-o',
                     str(tmp_path / 'cat2'), '--device', 'cpu']) == 0
    assert 'raw image' not in capsys.readouterr().err


@pytest.mark.parametrize(('name', 'residual'), [
    ('night1.fit', 'night1_residual.fit'),
    ('night1.FTS', 'night1_residual.FTS'),
    ('out.fits.gz', 'out_residual.fits.gz'),
    ('out.fit.gz', 'out_residual.fit.gz'),
])
def test_denoise_output_suffixes(tmp_path, capsys, name, residual):
    # The residual keeps the output's whole FITS suffix (it cut five
    # characters off '.fit' and wrote 'night_residual.fits'), and an -o
    # ending in a compressed FITS suffix is a file, not a directory.
    data = _noisy_fits(tmp_path / 'a.fits')
    out = tmp_path / name
    assert cli.main(['denoise', str(tmp_path / 'a.fits'), '-o', str(out),
                     '--residual', '--device', 'cpu', '--threads', '1']) == 0
    assert out.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ['a.fits', name, residual])
    den = fits.getdata(out)
    resid = fits.getdata(tmp_path / residual)
    np.testing.assert_allclose(resid, data - den, atol=1e-3)
    if name.endswith('.gz'):
        assert out.read_bytes()[:2] == b'\x1f\x8b'
    capsys.readouterr()


def test_denoise_residual_names_distinct(tmp_path, capsys):
    _noisy_fits(tmp_path / 'a.fits')
    for name in ('night1.fit', 'night2.fit'):
        assert cli.main(['denoise', str(tmp_path / 'a.fits'), '-o',
                         str(tmp_path / name), '--residual',
                         '--device', 'cpu', '--threads', '1']) == 0
    assert (tmp_path / 'night1_residual.fit').is_file()
    assert (tmp_path / 'night2_residual.fit').is_file()
    capsys.readouterr()


def test_denoise_unwritable_suffix(tmp_path, capsys):
    # .fz (tile compression) cannot be written: a usage error, no directory
    assert cli.main(['denoise', 'x.fits', '-o',
                     str(tmp_path / 'out.fits.fz')]) == 2
    assert not (tmp_path / 'out.fits.fz').exists()
    capsys.readouterr()


def test_denoise_batch_keeps_going(tmp_path, capsys):
    _noisy_fits(tmp_path / 'a.fits')
    (tmp_path / 'bad.fits').write_text('not a FITS file')
    outdir = tmp_path / 'den'
    assert cli.main(['denoise', str(tmp_path / 'a.fits'),
                     str(tmp_path / 'bad.fits'), '-o', str(outdir),
                     '--saturation', 'none', '--device', 'cpu']) == 1
    assert (outdir / 'a_denoised.fits').exists()
    err = capsys.readouterr().err
    assert 'bad.fits: FAILED' in err


def test_denoise_restore_flux(tmp_path, capsys):
    rng = np.random.default_rng(0)
    data = rng.normal(200.0, 5.0, (64, 80)).astype(np.float32)
    yy, xx = np.mgrid[:64, :80]
    data += 400 * np.exp(-((xx - 20.3) ** 2 + (yy - 40.6) ** 2)
                         / (2 * 1.3 ** 2))
    fits.PrimaryHDU(data).writeto(tmp_path / 'a.fits')
    plain, restored = tmp_path / 'plain.fits', tmp_path / 'restored.fits'
    for out, extra in ((plain, []), (restored, ['--restore-flux', '3'])):
        assert cli.main(['denoise', str(tmp_path / 'a.fits'), '-o',
                         str(out), '--device', 'cpu'] + extra) == 0
    den, res = fits.getdata(plain), fits.getdata(restored)
    # The star's flux: the plain denoiser changes it (the bundled 1.1.0
    # model adds 38 counts here), the restored image keeps the data's (to
    # a quarter of that change); the sky is smoother.
    box = (slice(34, 48), slice(13, 28))
    change = abs(data[box].sum() - den[box].sum())
    assert change > 20.0
    assert abs(data[box].sum() - res[box].sum()) < 0.25 * change
    assert np.std(res[:20]) < 0.5 * np.std(data[:20])
    assert cli.main(['denoise', str(tmp_path / 'a.fits'), '-o',
                     str(tmp_path / 'x.fits'), '--restore-flux', '-1']) == 2
    capsys.readouterr()


def test_denoise_bad_usage(tmp_path, capsys):
    assert cli.main(['denoise', 'x.fits']) == 2  # -o is required
    assert cli.main(['denoise', 'x.fits', 'y.fits', '-o', 'one.fits']) == 2
    assert cli.main(['denoise', 'x.fits', '-o', str(tmp_path),
                     '--saturation', 'high']) == 2
    capsys.readouterr()
    assert cli.main(['denoise', 'x.fits', '-o', str(tmp_path),
                     '--model', str(tmp_path / 'missing.onnx')]) == 2
    assert 'missing.onnx: no such file' in capsys.readouterr().err


def test_train_n2v_passes_arguments(monkeypatch):
    pytest.importorskip('torch')
    from cnnfind.training import n2v

    seen = []
    monkeypatch.setattr(n2v, 'main', lambda argv=None: seen.append(argv))
    assert cli.main(['train', 'n2v', 'a.fits', '--out', 'm.onnx']) == 0
    assert seen == [['a.fits', '--out', 'm.onnx']]


def test_train_n2v_end_to_end(tmp_path, capsys):
    pytest.importorskip('torch')
    _noisy_fits(tmp_path / 'a.fits', shape=(64, 64))
    model = tmp_path / 'own.onnx'
    assert cli.main(['train', 'n2v', str(tmp_path / 'a.fits'), '--out',
                     str(model), '--steps', '4', '--patch', '32',
                     '--batch-size', '2', '--no-progress']) == 0
    assert model.exists() and model.with_suffix('.json').exists()
    assert cli.main(['denoise', str(tmp_path / 'a.fits'), '-o',
                     str(tmp_path / 'd.fits'), '--model', str(model),
                     '--device', 'cpu']) == 0
    capsys.readouterr()
    assert cli.main(['train', 'n2v', '--out', str(model)]) == 2
    assert 'give FITS images' in capsys.readouterr().err


# ---------------------------------------------------------------------------
# The batch runner (cnnfind._batch)
# ---------------------------------------------------------------------------

def _toy_setup(scale):
    return {'scale': scale, 'built': object()}


def _toy_process(tool, item):
    from astropy.utils.exceptions import AstropyUserWarning

    from cnnfind._batch import FileResult

    if item == 'bad':
        raise cli.CLIError('bad: broken on purpose')
    if item == 'crash':
        return 1 / 0
    if item == 'warn':
        warnings.warn('look here', AstropyUserWarning)
    return FileResult(count=tool['scale'] * len(item), written=[f'{item}.out'],
                      payload=id(tool['built']))


def test_batch_runner_keeps_going_and_reports(capsys):
    from cnnfind import _batch

    task = _batch.Task(_toy_setup, _toy_process, {'scale': 2}, noun='things')
    outcomes = _batch.run_batch(task, ['ab', 'bad', 'warn', 'crash', 'abc'])
    assert [o.ok for o in outcomes] == [True, False, True, False, True]
    assert [o.result.count for o in outcomes if o.ok] == [4, 8, 6]
    # the tool was built once and reused for every file
    assert len({o.result.payload for o in outcomes if o.ok}) == 1
    assert outcomes[1].error == 'bad: broken on purpose'
    assert outcomes[3].error.startswith('ZeroDivisionError')
    assert outcomes[2].result.warnings == ['AstropyUserWarning: look here']
    assert _batch.summarize(task, outcomes) == 1
    out, err = capsys.readouterr()
    assert '[1/5] ab: 4 things -> ab.out' in out
    assert 'Summary: 3 of 5 images processed, 18 things in all; 2 failed.' in out
    assert '[2/5] bad: FAILED: bad: broken on purpose' in err
    assert 'warning: AstropyUserWarning: look here' in err
    assert 'Failed images:\n  bad: broken on purpose\n  crash: ZeroDivision' in err

    ok = _batch.run_batch(task, ['x'], progress=True)
    assert _batch.summarize(task, ok) == 0
    assert '1/1' in capsys.readouterr().err  # the tqdm bar over files


def test_progress_without_tqdm(monkeypatch, capsys):
    from cnnfind import _batch

    monkeypatch.setitem(sys.modules, 'tqdm.auto', None)  # not installed
    task = _batch.Task(_toy_setup, _toy_process, {'scale': 1})
    outcomes = _batch.run_batch(task, ['a', 'b'], progress=True)
    assert all(o.ok for o in outcomes)
    # astropy's ProgressBar stands in (it draws only on a terminal)
    assert '[2/2] b: wrote b.out' in capsys.readouterr().out


def test_worker_tool_cache():
    from cnnfind import _batch

    a = _batch.Task(_toy_setup, _toy_process, {'scale': 1})
    b = _batch.Task(_toy_setup, _toy_process, {'scale': 3})
    tool = _batch.worker_tool(a)
    assert _batch.worker_tool(a) is tool
    assert _batch.worker_tool(_batch.Task(_toy_setup, _toy_process,
                                          {'scale': 1})) is tool
    assert _batch.worker_tool(b) is not tool and _batch.worker_tool(b)['scale'] == 3
    ok, result = _batch.run_in_worker(a, 'ab')
    assert ok and result.count == 2
    assert _batch.run_in_worker(a, 'bad') == (False, 'bad: broken on purpose')
    broken = _batch.Task(_toy_setup, _toy_process, {'scale': 1, 'oops': 2})
    ok, msg = _batch.run_in_worker(broken, 'ab')
    assert not ok and msg.startswith('cannot set up the tool: TypeError')


def test_worker_threads_and_batch_options():
    from cnnfind import _batch

    assert _batch.worker_threads(1, None) is None
    assert _batch.worker_threads(2, None) == 1
    assert _batch.worker_threads(1, 'tcp://x:1') == 1
    assert _batch.worker_threads(4, None, threads=3) == 3
    assert _batch.check_batch_options(1, None) is None
    assert 'positive' in _batch.check_batch_options(0, None)
    assert 'cannot be combined' in _batch.check_batch_options(2, 'tcp://x:1')


def test_output_path_checks(tmp_path, capsys):
    afile = tmp_path / 'file.txt'
    afile.write_text('x')
    for argv in (['find', 'x.fits', '-o', str(afile)],
                 ['psfstars', 'x.fits', '-o', str(afile)],
                 ['denoise', 'x.fits', '-o', str(afile)],
                 ['denoise', 'x.fits', '-o', str(afile / 'y.fits')],
                 ['morph', 'x.fits', '-o', str(tmp_path / 'table.csv')],
                 ['morph', 'x.fits', '-o', str(afile / 't.ecsv')]):
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith(f'cnnfind {argv[0]}: error: output ')
    (tmp_path / 'dir.ecsv').mkdir()
    assert cli.main(['morph', 'x.fits', '-o', str(tmp_path / 'dir.ecsv')]) == 2
    assert 'is a directory' in capsys.readouterr().err


def test_bad_batch_options(tmp_path, capsys):
    assert cli.main(['find', 'x.fits', '-o', str(tmp_path), '--jobs', '0']) == 2
    assert cli.main(['find', 'x.fits', '-o', str(tmp_path), '--jobs', '2',
                     '--scheduler', 'tcp://127.0.0.1:1']) == 2
    assert 'cannot be combined' in capsys.readouterr().err


def test_find_progress_over_files(tmp_path, fake_finder, m13_data, capsys):
    data, header = m13_data
    paths = []
    for name in ('a', 'b'):
        fits.writeto(tmp_path / f'{name}.fits', data, header)
        paths.append(str(tmp_path / f'{name}.fits'))
    assert cli.main(['find', *paths, '-o', str(tmp_path / 'o'),
                     '--progress']) == 0
    captured = capsys.readouterr()
    assert '2/2' in captured.err and 'file' in captured.err
    assert fake_finder.calls[-1]['progress'] is False  # no nested tile bars


def _star_fields(tmp_path, n=3, shape=(96, 96)):
    from cnnfind.simulation import make_scenario

    paths = []
    for i in range(n):
        path = tmp_path / f'sim{i}.fits'
        fits.writeto(path, make_scenario('sparse', shape=shape,
                                         seed=i)['image'])
        paths.append(str(path))
    return paths


def _same_tables(dir1, dir2, names):
    for name in names:
        t1 = Table.read(os.path.join(dir1, name))
        t2 = Table.read(os.path.join(dir2, name))
        assert t1.colnames == t2.colnames
        assert len(t1) == len(t2)
        for col in t1.colnames:
            a, b = np.asarray(t1[col]), np.asarray(t2[col])
            assert np.array_equal(a, b, equal_nan=a.dtype.kind == 'f'), col


def test_find_jobs_equals_serial(tmp_path, real_finder, capsys):
    paths = _star_fields(tmp_path)
    bad = tmp_path / 'bad.fits'
    bad.write_text('not FITS')
    serial, parallel = tmp_path / 'serial', tmp_path / 'parallel'
    assert cli.main(['find', *paths, str(bad), '-o', str(serial)]) == 1
    assert cli.main(['find', str(bad), *paths, '-o', str(parallel),
                     '--jobs', '2', '--device', 'cpu']) == 1
    err = capsys.readouterr().err
    assert f'{bad}: cannot be read as FITS' in err
    names = [f'sim{i}.ecsv' for i in range(3)]
    _same_tables(serial, parallel, names)
    assert sum(len(Table.read(parallel / n)) for n in names) > 0


# ---------------------------------------------------------------------------
# cnnfind psfstars
# ---------------------------------------------------------------------------

@pytest.fixture(scope='module')
def psf_field(tmp_path_factory):
    from cnnfind.evaluation.psf import simulate_psf_field

    sim = simulate_psf_field((128, 128), seed=3, density=5000,
                             galaxies_per_mpix=0, cosmics_per_mpix=0,
                             hot_per_mpix=0)
    path = tmp_path_factory.mktemp('psf') / 'stars.fits'
    fits.writeto(path, sim['image'].astype(np.float32))
    return path, sim


def test_psfstars_table_and_epsf(psf_field, tmp_path, capsys):
    from cnnfind.psfstars import PSFStarSelector

    path, sim = psf_field
    outdir = tmp_path / 'psf'
    assert cli.main(['psfstars', str(path), '-o', str(outdir), '--fwhm', '3.5',
                     '--epsf', '--epsf-maxiters', '3', '--device', 'cpu']) == 0
    out = capsys.readouterr().out
    tbl = QTable.read(outdir / 'stars.ecsv')
    expected = PSFStarSelector(fwhm=3.5)(sim['image'].astype(np.float32))
    assert f'{len(expected)} PSF stars' in out
    assert tbl.colnames[:10] == list(cli.PSF_COLUMNS)
    np.testing.assert_allclose(tbl['x_centroid'], expected['x_centroid'])
    np.testing.assert_allclose(tbl['psf_score'], expected['psf_score'],
                               rtol=1e-6)
    assert tbl.meta['fwhm'] == 3.5 and tbl.meta['n_selected'] == len(tbl)
    with fits.open(outdir / 'stars_epsf.fits') as hdul:
        epsf = hdul[0].data
        assert hdul[0].header['OVERSAMP'] == 4
        assert hdul[0].header['NSTARS'] == len(tbl)
    assert epsf.shape == (101, 101)  # 25-pixel stars, oversampled 4 times
    # a centred, single-peaked model
    peak = np.unravel_index(np.argmax(epsf), epsf.shape)
    assert abs(peak[0] - 50) <= 2 and abs(peak[1] - 50) <= 2


def test_psfstars_epsf_failure_is_reported(psf_field, tmp_path, capsys,
                                           monkeypatch):
    """EPSFBuilder's own errors fail the image with a clear message."""
    import cnnfind.evaluation.psf as psf_module

    def failing(*args, **kwargs):
        raise ValueError('Cannot normalize ePSF')

    monkeypatch.setattr(psf_module, 'build_epsf', failing)
    path, _ = psf_field
    status = cli.main(['psfstars', str(path), '-o', str(tmp_path / 'o'),
                       '--fwhm', '3.5', '--epsf'])
    assert status == 1
    err = capsys.readouterr().err
    assert 'EPSFBuilder could not build an ePSF' in err
    assert 'Cannot normalize ePSF' in err


def test_psfstars_candidates_and_rejected(psf_field, tmp_path, capsys):
    path, _ = psf_field
    cands = tmp_path / 'cands'
    cands.mkdir()
    # candidates from a table directory named like the image stems
    Table({'x': [30.0, 64.0], 'y': [30.0, 64.0]}).write(cands / 'stars.ecsv')
    outdir = tmp_path / 'o'
    status = cli.main(['psfstars', str(path), '-o', str(outdir), '--fwhm', '3.5',
                       '--candidates', str(cands), '--keep-rejected'])
    assert status == 0
    tbl = QTable.read(outdir / 'stars.ecsv')
    assert len(tbl) == 2  # every candidate is listed
    assert set(tbl.colnames) >= {'selected', 'reason'}
    assert tbl.meta['candidates'].endswith('stars.ecsv')
    # a candidate table without position columns fails that image
    Table({'a': [1.0]}).write(cands / 'other.ecsv')
    status = cli.main(['psfstars', str(path), '-o', str(outdir), '--fwhm', '3.5',
                       '--candidates', str(cands / 'other.ecsv')])
    assert status == 1
    assert 'no position columns' in capsys.readouterr().err


def test_psfstars_failures_and_usage(psf_field, tmp_path, capsys):
    path, _ = psf_field
    noise = tmp_path / 'noise.fits'
    fits.writeto(noise, np.random.default_rng(1).normal(0, 1, (64, 64)))
    outdir = tmp_path / 'o'
    status = cli.main(['psfstars', str(noise), str(tmp_path / 'missing.fits'),
                       '-o', str(outdir), '--fwhm', '3', '--epsf'])
    assert status == 1
    err = capsys.readouterr().err
    assert 'EPSFBuilder needs at least 2' in err
    assert 'missing.fits: no such file' in err
    # the (empty) table was still written
    assert len(QTable.read(outdir / 'noise.ecsv')) == 0
    for bad in (['--min-score', '1.5'], ['--size', '24'],
                ['--epsf-size', '27'], ['--max-stars', '0'],
                ['--candidates', str(tmp_path / 'nothing.ecsv')],
                ['--model', str(tmp_path / 'missing.onnx')]):
        assert cli.main(['psfstars', str(path), '-o', str(outdir), *bad]) == 2
        assert 'error' in capsys.readouterr().err


# ---------------------------------------------------------------------------
# cnnfind morph
# ---------------------------------------------------------------------------

def _blob(size=96, axis_ratio=0.7, scale=5.0):
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    return np.exp(-np.hypot(xx, yy / axis_ratio) / scale)


@pytest.fixture
def cutout_dir(tmp_path):
    pil = pytest.importorskip('PIL.Image')
    rng = np.random.default_rng(0)
    folder = tmp_path / 'cutouts'
    folder.mkdir()
    arrays = {}
    for name, amp in (('round.png', 200), ('sky.png', 0), ('grey.png', 150)):
        img = np.clip(rng.normal(8, 3, (96, 96)) + amp * _blob(), 0, 255)
        img = img.astype(np.uint8)
        arr = img if name == 'grey.png' else np.stack([img] * 3, axis=-1)
        pil.fromarray(arr).save(folder / name)
        arrays[name] = arr
    (folder / 'broken.png').write_text('not an image')
    (folder / 'notes.txt').write_text('ignored')
    return folder, arrays


def test_morph_cutouts(cutout_dir, tmp_path, capsys):
    from cnnfind.morphology import GalaxyMorphClassifier

    folder, arrays = cutout_dir
    out = tmp_path / 'morph.ecsv'
    assert cli.main(['morph', str(folder), '-o', str(out), '--device',
                     'cpu']) == 1
    captured = capsys.readouterr()
    assert 'broken.png: cannot be read as an image' in captured.err
    assert 'Summary: 3 of 4 cutouts processed; 1 failed.' in captured.out
    tbl = QTable.read(out)
    assert list(tbl['file']) == ['grey.png', 'round.png', 'sky.png']
    assert list(tbl['id']) == [1, 2, 3]
    assert tbl.meta['failed'] == [str(folder / 'broken.png')]
    clf = GalaxyMorphClassifier(device='cpu')
    for row in tbl:
        ref = clf(arrays[row['file']][None])
        for name in ('p_elliptical', 'p_spiral', 'p_no_galaxy'):
            assert row[name] == pytest.approx(ref[name][0], abs=1e-6)
        assert row['label'] == ref['label'][0]
    p = np.column_stack([tbl['p_elliptical'], tbl['p_spiral'],
                         tbl['p_no_galaxy']])
    np.testing.assert_allclose(p.sum(axis=1), 1, atol=1e-5)
    # the empty-sky cutout is no galaxy, the bright round blob is one
    assert tbl['label'][2] == 'no_galaxy'
    assert tbl['p_no_galaxy'][1] < tbl['p_no_galaxy'][2]


def test_morph_field(tmp_path, capsys):
    rng = np.random.default_rng(2)
    field = rng.normal(100, 5, (128, 128)).astype(np.float32)
    yy, xx = np.mgrid[:128, :128]
    for x, y in ((40, 40), (90, 80)):
        field += 3000 * np.exp(-np.hypot(xx - x, (yy - y) / 0.7) / 4)
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ['RA---TAN', 'DEC--TAN']
    wcs.wcs.crval = [150.0, 2.0]
    wcs.wcs.crpix = [64, 64]
    wcs.wcs.cdelt = [-1e-4, 1e-4]
    fits.writeto(tmp_path / 'field.fits', field, wcs.to_header())
    positions = tmp_path / 'pos'
    positions.mkdir()
    Table({'x_centroid': [40.0, 90.0], 'y_centroid': [40.0, 80.0]}).write(
        positions / 'field.ecsv')
    out = tmp_path / 'f.ecsv'
    assert cli.main(['morph', str(tmp_path / 'field.fits'), '-o', str(out),
                     '--positions', str(positions)]) == 0
    tbl = QTable.read(out)
    assert len(tbl) == 2 and list(tbl['x_centroid']) == [40.0, 90.0]
    sky = wcs.pixel_to_world([40.0, 90.0], [40.0, 80.0])
    np.testing.assert_allclose(tbl['ra'].to_value('deg'), sky.ra.deg)
    assert '2 sources' in capsys.readouterr().out
    # without positions the sources are found by segmentation
    assert cli.main(['morph', str(tmp_path / 'field.fits'), '-o',
                     str(tmp_path / 'seg.ecsv')]) == 0
    seg = QTable.read(tmp_path / 'seg.ecsv')
    assert len(seg) == 2
    np.testing.assert_allclose(np.sort(seg['x_centroid']), [40, 90], atol=1)


def test_morph_usage(cutout_dir, tmp_path, capsys):
    folder, _ = cutout_dir
    fits.writeto(tmp_path / 'f.fits', np.zeros((32, 32)))
    out = str(tmp_path / 'o.ecsv')
    assert cli.main(['morph', str(folder / 'round.png'),
                     str(tmp_path / 'f.fits'), '-o', out]) == 2
    assert 'not both' in capsys.readouterr().err
    assert cli.main(['morph', str(folder / 'round.png'), '-o', out,
                     '--positions', str(folder / 'round.png')]) == 2
    assert cli.main(['morph', str(tmp_path), '-o', out]) == 2
    assert 'holds no cutout files' in capsys.readouterr().err
    assert cli.main(['morph', str(folder), '-o', out,
                     '--max-masked-fraction', '2']) == 2


# ---------------------------------------------------------------------------
# Dask (a LocalCluster on loopback)
# ---------------------------------------------------------------------------

@pytest.fixture(scope='module')
def dask_cluster():
    distributed = pytest.importorskip('distributed')
    with distributed.LocalCluster(processes=True, n_workers=2,
                                  threads_per_worker=1, host='127.0.0.1',
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        yield cluster, client


def test_dask_equals_serial(dask_cluster, tmp_path, real_finder, capsys):
    cluster, client = dask_cluster
    paths = _star_fields(tmp_path, n=4)
    missing = str(tmp_path / 'missing.fits')
    serial, dask = tmp_path / 'serial', tmp_path / 'dask'
    assert cli.main(['find', *paths, '-o', str(serial), '--device', 'cpu']) == 0
    assert cli.main(['find', *paths, missing, '-o', str(dask), '--device',
                     'cpu', '--scheduler', cluster.scheduler_address]) == 1
    captured = capsys.readouterr()
    assert 'Summary: 4 of 5 images processed' in captured.out
    assert 'missing.fits: no such file' in captured.err
    _same_tables(serial, dask, [f'sim{i}.ecsv' for i in range(4)])

    # each worker built one tool and one onnxruntime session per model (the
    # network and its vetting stage) for its files
    def state():
        from cnnfind import _batch
        from cnnfind.runtime.session import _cached_session
        return len(_batch._TOOLS), _cached_session.cache_info().misses

    per_worker = client.run(state)
    assert sum(tools for tools, _ in per_worker.values()) >= 1
    for tools, sessions in per_worker.values():
        assert tools <= 1 and sessions <= 2


def test_dask_morph_equals_serial(dask_cluster, cutout_dir, tmp_path, capsys):
    cluster, _ = dask_cluster
    folder, _ = cutout_dir
    (folder / 'broken.png').unlink()
    one, two = tmp_path / 'serial.ecsv', tmp_path / 'dask.ecsv'
    assert cli.main(['morph', str(folder), '-o', str(one)]) == 0
    assert cli.main(['morph', str(folder), '-o', str(two), '--scheduler',
                     cluster.scheduler_address]) == 0
    t1, t2 = Table.read(one), Table.read(two)
    assert t1.colnames == t2.colnames and len(t1) == 3
    for col in t1.colnames:
        a, b = np.asarray(t1[col]), np.asarray(t2[col])
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == 'f'), col


def test_unreachable_scheduler(tmp_path, monkeypatch, capsys):
    pytest.importorskip('distributed')
    from cnnfind import _batch

    monkeypatch.setattr(_batch, 'CONNECT_TIMEOUT', 1)
    fits.writeto(tmp_path / 'a.fits', np.zeros((16, 16)))
    assert cli.main(['find', str(tmp_path / 'a.fits'), '-o', str(tmp_path),
                     '--scheduler', 'tcp://127.0.0.1:9']) == 2
    assert 'cannot connect to the Dask scheduler' in capsys.readouterr().err


def test_scheduler_needs_distributed(tmp_path, monkeypatch, capsys):
    from cnnfind import _batch

    monkeypatch.setattr(_batch, '_have_distributed', lambda: False)
    assert cli.main(['find', 'a.fits', '-o', str(tmp_path), '--scheduler',
                     'tcp://127.0.0.1:9']) == 2
    assert 'cnnfind[dask]' in capsys.readouterr().err

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
                 device='auto', progress=False):
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
    for command in ('demo', 'find', 'denoise', 'train'):
        assert command in out


@pytest.mark.parametrize('command', ['demo', 'find', 'denoise', 'train'])
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
    # threshold handed to the finder is K times the sigma-clipped noise
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

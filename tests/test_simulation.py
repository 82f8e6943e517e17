"""Simulations used for training and evaluation."""

import numpy as np
import pytest

from cnnfind.simulation import (
    SCENARIOS,
    FieldConfig,
    make_scenario,
    psf_sum_squares,
    render_profiles,
    simulate_field,
)


@pytest.mark.parametrize(('kind', 'fwhm'), [('gaussian', 1.5),
                                            ('gaussian', 6.0),
                                            ('moffat', 3.0)])
def test_render_conserves_flux(kind, fwhm):
    img = np.zeros((121, 121))
    render_profiles(img, [60.3], [59.8], [1000.0], fwhm, kind=kind,
                    radius=58)
    assert img.sum() == pytest.approx(1000.0, rel=0.02)
    assert np.unravel_index(img.argmax(), img.shape) == (60, 60)


def test_psf_sum_squares_gaussian():
    sigma = 4.0 / 2.3548
    assert 1 / psf_sum_squares(4.0, kind='gaussian') == pytest.approx(
        4 * np.pi * sigma**2, rel=0.03)


def test_field_snr_is_matched_filter_snr():
    cfg = FieldConfig(density=50, fwhm=3.0, psf_kind='gaussian',
                      snr_min=50, snr_max=51, sky=100.0, read_noise=0.0,
                      gain=1.0)
    sim = simulate_field((256, 256), cfg, seed=1)
    st = sim['stars']
    expected = st['flux'] * np.sqrt(psf_sum_squares(3.0, kind='gaussian'))
    np.testing.assert_allclose(expected / sim['noise'], st['snr'], rtol=1e-6)


@pytest.mark.parametrize('name', sorted(SCENARIOS))
def test_scenarios_reproducible(name):
    a = make_scenario(name, (96, 96), seed=4)
    b = make_scenario(name, (96, 96), seed=4)
    np.testing.assert_array_equal(a['image'], b['image'])
    assert a['image'].shape == (96, 96)


def test_unknown_scenario():
    with pytest.raises(ValueError, match='unknown scenario'):
        make_scenario('nope')


def test_saturation_and_artefacts():
    cfg = FieldConfig(density=400, snr_max=1e5, saturation=3000.0,
                      n_cosmic=20, n_galaxies=3, n_bad_columns=2)
    sim = simulate_field((200, 200), cfg, seed=2)
    assert sim['image'][~sim['mask']].max() <= 3000.0
    assert sim['mask'].any()
    assert (sim['artefacts']['cosmic'] > 0).any()
    gal = sim['artefacts']['galaxies']
    assert len(gal['x']) == 3
    # The galaxies' parameters come with them, within the drawn ranges.
    assert all(len(gal[k]) == 3 for k in ('re', 'n', 'q', 'snr'))
    assert np.all((gal['n'] >= 0.5) & (gal['n'] <= 4.0))
    assert np.all((gal['q'] >= 0.3) & (gal['q'] <= 1.0))
    assert np.all(gal['re'] >= cfg.fwhm + 1.0)
    assert np.all((gal['snr'] >= 10) & (gal['snr'] <= 10**2.7))

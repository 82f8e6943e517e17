"""
Named, seeded benchmark scenarios: the fields on which cnnfind and the
classical finders are compared.
"""

from cnnfind.simulation.fields import FieldConfig, simulate_field

__all__ = ['SCENARIOS', 'make_scenario']

#: Scenario recipes. ``realistic`` carries the artefacts that defeat
#: linear detectors: cosmic rays, hot pixels, galaxies, saturation,
#: gradient and nebulosity.
SCENARIOS = {
    'sparse': dict(density=300.0, fwhm=3.0, snr_min=3.0),
    'crowded': dict(density=3000.0, fwhm=3.0, snr_min=3.0),
    'faint': dict(density=500.0, fwhm=3.0, snr_min=2.0, snr_max=30.0,
                  snr_slope=1.0),
    'realistic': dict(density=800.0, fwhm=3.5, beta=2.8, ratio=0.9,
                      theta=0.5, snr_min=3.0, n_cosmic_per_mpix=400,
                      n_hot_per_mpix=100, n_galaxies_per_mpix=150,
                      saturation=40000.0, gradient=30.0, nebula=40.0),
}


def make_scenario(name, shape=(1024, 1024), seed=0):
    """
    Simulate one of the named benchmark scenarios.

    Parameters
    ----------
    name : {'sparse', 'crowded', 'faint', 'realistic'}
        The scenario.
    shape : tuple of int
        Image shape.
    seed : int
        Random seed.

    Returns
    -------
    result : dict
        As returned by `~cnnfind.simulation.simulate_field`.

    Examples
    --------
    >>> from cnnfind.simulation import make_scenario
    >>> sim = make_scenario('sparse', shape=(128, 128), seed=3)
    >>> sim['image'].dtype
    dtype('float32')
    """
    if name not in SCENARIOS:
        msg = f'unknown scenario {name!r}; choose from {sorted(SCENARIOS)}'
        raise ValueError(msg)
    recipe = dict(SCENARIOS[name])
    mpix = shape[0] * shape[1] / 1e6
    for key in ('n_cosmic', 'n_hot', 'n_galaxies'):
        per = recipe.pop(f'{key}_per_mpix', 0)
        recipe[key] = int(round(per * mpix))
    return simulate_field(shape, FieldConfig(**recipe), seed=seed)

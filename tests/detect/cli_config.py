"""lavida-detect's config for the tests' CPU runs."""

from pathlib import Path


def cli_config(inputs, categories, checkpoint, output_dir, **values):
    """lavida-detect's config (detect.yaml) for a CPU run over ``inputs``; ``values`` override its keys."""
    from omegaconf import OmegaConf

    import lavida.configs

    cfg = OmegaConf.load(Path(lavida.configs.__file__).with_name("detect.yaml"))
    cfg.input, cfg.categories, cfg.checkpoint = str(inputs), categories, str(checkpoint)
    cfg.output_dir, cfg.device = str(output_dir), "cpu"
    for key, value in values.items():
        cfg[key] = value
    return cfg

"""YOLACT's declaration for the shared tools (benchmark, demo, test contract): see
:mod:`projects.methods`."""

from projects.methods import BenchmarkConfig, Method, register_method

YOLACT = register_method(
    Method(
        name="YOLACT",
        package="yolact",
        toy_configs=("yolact.yaml",),
        benchmark_configs=(
            BenchmarkConfig("YOLACT/R_50_550.yaml", toy="yolact.yaml", label="YOLACT-550 R50"),
        ),
        score_threshold_keys=("MODEL.YOLACT.SCORE_THRESH_TEST",),
        num_classes_key="MODEL.YOLACT.NUM_CLASSES",
        readme="yolact/README.md",
    )
)

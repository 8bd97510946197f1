"""BlendMask's declaration for the shared tools (benchmark, demo, test contract): see
:mod:`projects.methods`."""

from projects.methods import BenchmarkConfig, Method, register_method

BLENDMASK = register_method(
    Method(
        name="BlendMask",
        package="blendmask",
        toy_configs=("blendmask.yaml",),
        benchmark_configs=(
            BenchmarkConfig("BlendMask/R_50_1x.yaml", toy="blendmask.yaml", label="BlendMask R50"),
            BenchmarkConfig(
                "BlendMask/550_R_50_3x.yaml", toy="blendmask.yaml", label="BlendMask-550 R50"
            ),
        ),
        score_threshold_keys=("MODEL.FCOS.INFERENCE_TH_TEST",),
        num_classes_key="MODEL.FCOS.NUM_CLASSES",
        readme="blendmask/README.md",
    )
)

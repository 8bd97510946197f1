"""PointRend's declaration for the shared tools (benchmark, demo, test contract): see
:mod:`projects.methods`."""

from projects.methods import BenchmarkConfig, Method, register_method

from .flops import count_point_rend_head_flops

POINTREND = register_method(
    Method(
        name="PointRend",
        package="pointrend",
        toy_configs=("pointrend.yaml", "pointrend_semseg.yaml"),
        benchmark_configs=(
            BenchmarkConfig(
                "PointRend/pointrend_rcnn_R_50_FPN_3x_coco.yaml",
                toy="pointrend.yaml",
                label="PointRend R50-FPN",
            ),
        ),
        score_threshold_keys=("MODEL.ROI_HEADS.SCORE_THRESH_TEST",),
        head_flops=count_point_rend_head_flops,
        readme="pointrend/README.md",
    )
)

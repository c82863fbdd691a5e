"""Identity of the TensorRT plugin that fuses one STA stage's selection (see plugins/sta_stage_select)."""

PLUGIN_OP_TYPE = "STAStageSelect"
PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = "sta_deploy"

// Entry points shared by the CPU reference and the CUDA launcher libraries.
#include "sta_stage_select/core.h"

extern "C" {

STA_API const char* sta_stage_select_error_string(int code)
{
    switch (code)
    {
    case STA_OK: return "success";
    case STA_ERR_NULL_POINTER: return "a required pointer is NULL";
    case STA_ERR_BAD_SHAPE: return "invalid shape: need B >= 1, G >= 1, n >= 2 and D >= 1";
    case STA_ERR_BAD_R: return "invalid r: need 0 <= r < n (the output has n - r tokens per group)";
    case STA_ERR_TOO_MANY_TOKENS:
        return "n (tokens per group) exceeds STA_STAGE_SELECT_MAX_TOKENS = 2048 (per-token state lives in shared "
               "memory)";
    case STA_ERR_DIM_TOO_LARGE: return "D (metric width) exceeds STA_STAGE_SELECT_MAX_DIM = 4096";
    case STA_ERR_OUT_OF_MEMORY: return "host memory allocation failed";
    case STA_ERR_WORKSPACE: return "workspace smaller than sta_stage_select_workspace_size(B, n)";
    case STA_ERR_CUDA: return "a CUDA call failed";
    default: return "unknown STAStageSelect error code";
    }
}

STA_API int sta_stage_select_validate(int64_t B, int64_t G, int64_t n, int64_t D, int64_t r)
{
    return sta::validate(B, G, n, D, r);
}

STA_API size_t sta_stage_select_workspace_size(int64_t B, int64_t n)
{
    if (B < 1 || n < 1)
    {
        return 0;
    }
    return static_cast<size_t>(B) * static_cast<size_t>(n) * static_cast<size_t>(n) * sizeof(float);
}

} // extern "C"

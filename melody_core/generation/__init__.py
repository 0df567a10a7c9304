"""Generation: settings in, PCM + metadata + progress out (Fig. 1 of the paper).

Modules, each importing only those listed before it (tests/test_import_graph.py checks it):
- `types`: the plain data of the API (settings, results, events, `StreamControl`); no torch.
- `plan`: window plans (which frames each DPD call sees and generates); integers only.
- `validation`: input checks (one-line `PipelineError`s).
- `decode`: latents -> PCM, whole-range and streamed.
- `models`: the loaded `ModelSet` (networks, layout, latent scale, DPD precision, MuLan conditioning).
- `engine`: semantic LM + the DPD loop (`diffusion.denoise_steps`) over a window plan.
- `jobs`: generate / continue / inpaint jobs (and the inpainting crossfade rule).
- `pipeline`: `MelodyPipeline`, the façade (load, generate, continue_, inpaint, stream, stream_inpaint).

Only `types` is imported here, so the app can use the data types without loading torch; import
`MelodyPipeline` from `melody_core.generation.pipeline`.
"""

from melody_core.generation.types import (
    AudioChunk,
    GenerationCancelled,
    GenerationResult,
    GenerationSettings,
    PipelineError,
    Progress,
    StreamControl,
    StreamFinished,
)

__all__ = ["AudioChunk", "GenerationCancelled", "GenerationResult", "GenerationSettings", "PipelineError",
           "Progress", "StreamControl", "StreamFinished"]

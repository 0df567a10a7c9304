"""Shared test fixture data: tiny-preset overrides that make a whole random bundle build and run
in well under a second (pipeline and CLI tests)."""

MICRO_OVERRIDES = {
    "dpd": {"d_hid": 32, "n_blocks": 1, "n_heads": 2, "sru_hidden": 16, "segment_size": 32,
            "train_length": 400, "train_chunks": 4},
    "lm": {"d_model": 64, "n_layers": 1, "n_heads": 2, "ffn_hidden": 128, "max_len": 100, "window_keep": 50},
    "mulan": {"text_backbone": "hash", "d_model": 64, "n_layers": 1, "n_heads": 2, "ffn_hidden": 128,
              "hash_buckets": 512, "hash_dim": 32, "text_head_hidden": 64, "stem_channels": 8, "n_mels": 32},
    "vae": {"decoder_channels": 32, "istft_blocks": 1, "encoder_channels": [8, 8, 16, 32],
            "encoder_latent_blocks": 1},
    "ssl": {"d_model": 32, "n_layers": 1, "n_heads": 2, "conv_channels": [8, 16, 32, 32, 32, 32],
            "pos_conv_kernel": 8, "pos_conv_groups": 4, "token_layer": 1, "final_dim": 32,
            "codebook_entries": 16},
    "kmeans": {"dim": 32, "layer": 1},
}

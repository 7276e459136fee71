{{ rfm_heatmap('r_score', 'm_score') }}

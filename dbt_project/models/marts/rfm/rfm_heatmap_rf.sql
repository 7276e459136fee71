{{ rfm_heatmap('r_score', 'f_score') }}

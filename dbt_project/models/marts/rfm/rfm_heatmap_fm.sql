{{ rfm_heatmap('f_score', 'm_score') }}

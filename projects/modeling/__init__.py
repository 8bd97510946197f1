"""Model pieces shared by the methods: postprocessing of predictions, backbone variants."""

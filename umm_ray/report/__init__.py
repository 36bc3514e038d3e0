"""umm_ray.report"""

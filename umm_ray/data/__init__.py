"""umm_ray.data"""

"""ls.models"""

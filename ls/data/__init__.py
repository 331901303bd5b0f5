"""ls.data"""

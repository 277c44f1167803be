DROP TABLE tenants;
DROP FUNCTION set_updated_at();

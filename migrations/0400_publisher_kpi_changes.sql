-- Tell listening publishers that kpi_values changed, so cached ETags can be trusted without a query.
-- Statement-level and row-free: no lock is shared between concurrent writers; PostgreSQL folds identical
-- notifications of one transaction into one and delivers it on commit.
CREATE FUNCTION kpi_values_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('kpi_values_changed', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER kpi_values_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON kpi_values
    FOR EACH STATEMENT EXECUTE FUNCTION kpi_values_notify();

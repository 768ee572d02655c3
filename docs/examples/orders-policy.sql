-- An application's own table, where a verified key sees the orders its scopes name:
-- orders:read (or orders:*) every order of its partner, orders/7:read only order 7.
CREATE TABLE orders (
    id         bigint PRIMARY KEY,
    partner_id uuid NOT NULL,
    item       text NOT NULL
);
ALTER TABLE orders ENABLE ROW LEVEL SECURITY;
CREATE POLICY orders_of_the_key ON orders FOR SELECT USING (
    partner_id = apikey_current_partner()
    AND apikey_has_scope(apikey_current_scopes(), 'orders/' || id || ':read')
);
-- The application's role verifies keys and reads the table; apikey_verifier alone may not
-- call apikey_has_scope, so the policy needs it granted.
GRANT apikey_verifier TO orders_app;
GRANT EXECUTE ON FUNCTION apikey_has_scope(text[], text) TO orders_app;
GRANT SELECT ON orders TO orders_app;
